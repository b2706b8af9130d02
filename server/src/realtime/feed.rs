//! What the realtime router consumes: the change-capture types, re-exported in one place so
//! the router, catch-up and tests name them the same way, and [`Capture`] as the
//! [`ChangeSource`] that catch-up reads.

use futures::{stream::BoxStream, StreamExt};

pub use crate::capture::{Change, ChangeBatch, Cursor, LiveEvent, Op, TableName};
use crate::{
    capture::{Capture, CaptureError},
    protocol::ApiError,
};

use super::{ChangeSource, SourceError};

impl ChangeSource for Capture {
    fn changes_between(
        &self,
        after: Cursor,
        until: Cursor,
    ) -> BoxStream<'static, Result<ChangeBatch, SourceError>> {
        Capture::changes_between(self, after, until)
            .map(|r| {
                r.map_err(|e| match e {
                    CaptureError::ResyncRequired { .. } => SourceError::ResyncRequired,
                    e => SourceError::Failed(ApiError::from(e)),
                })
            })
            .boxed()
    }
}
