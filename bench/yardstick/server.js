// The yardstick of the realtime benchmark (bench/src/realtime.rs, scenario `yardstick`): the
// naive server users compare Rowcast with. A row trigger NOTIFYs `row_to_json(NEW)`, one
// connection LISTENs, and every payload is sent to every WebSocket as it is. No auth, no
// policies, no change log, no resume, no backpressure: deliberately the least work per row.
//
// Env: DATABASE_URL, PORT, YARDSTICK_TABLE (default public.feed). GET /ready answers 200 once
// the trigger is installed and LISTEN is on.
import http from "node:http";
import pg from "pg";
import { WebSocketServer } from "ws";

const table = process.env.YARDSTICK_TABLE || "public.feed";
const port = Number(process.env.PORT || 8090);
let ready = false;

const db = new pg.Client({ connectionString: process.env.DATABASE_URL });
await db.connect();
await db.query(`
  create or replace function yardstick_notify() returns trigger language plpgsql as $$
  begin
    perform pg_notify('yardstick', row_to_json(new)::text);
    return new;
  end $$;
  drop trigger if exists yardstick_notify on ${table};
  create trigger yardstick_notify after insert or update on ${table}
    for each row execute function yardstick_notify();
`);

const server = http.createServer((req, res) => {
  res.writeHead(ready ? 200 : 503).end(ready ? "ok" : "starting");
});
const wss = new WebSocketServer({ server });

db.on("notification", (n) => {
  for (const ws of wss.clients) ws.send(n.payload);
});
db.on("error", (e) => {
  console.error("yardstick:", e.message);
  process.exit(1);
});
await db.query("listen yardstick");

server.listen(port, "127.0.0.1", () => {
  ready = true;
});
process.on("SIGTERM", () => process.exit(0));
