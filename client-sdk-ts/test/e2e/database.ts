// Row types of the e2e schema, in the shape `rowcast gen types` writes.
export interface Database {
  public: {
    Tables: {
      todos: {
        Row: { id: string; owner_id: string; title: string; done: boolean; prio: number; _v: number | null };
        Insert: { id: string; owner_id?: string; title: string; done?: boolean; prio?: number };
        Update: { id?: string; owner_id?: string; title?: string; done?: boolean; prio?: number };
      };
      events: {
        Row: { id: number; owner_id: string; body: string; _v: number | null };
        Insert: { id?: never; owner_id?: string; body: string };
        Update: { body?: string };
      };
      projects: { Row: { id: number; name: string }; Insert: { id: number; name: string }; Update: { name?: string } };
      tasks: {
        Row: { id: number; project_id: number; title: string; rating: number | null; _v: number | null };
        Insert: { id: number; project_id: number; title: string; rating?: number | null };
        Update: { title?: string; rating?: number | null };
      };
    };
  };
}
