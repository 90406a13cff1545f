//! How the event pipeline's adapters run their Lua scripts: one `EVALSHA` within a timeout,
//! the script loaded again when Redis has lost it (restart, `SCRIPT FLUSH`), and every
//! failure classified as "Redis cannot answer now" or "something else".

use std::time::Duration;

use anyhow::anyhow;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike as _, LuaInterface as _};
use fred::types::scripts::Script;
use fred::types::{Key, Value};

/// A failed script call.
#[derive(Debug)]
pub(super) enum ScriptError {
    /// Not connected, no answer in time, or the connection was lost: retry later.
    Unavailable(anyhow::Error),
    /// Anything else (a script error, a reply of the wrong shape).
    Unexpected(anyhow::Error),
}

/// One of the pipeline's Lua scripts.
#[derive(Debug)]
pub(super) struct EventScript {
    lua: &'static str,
    script: Script,
}

impl EventScript {
    pub(super) fn new(lua: &'static str) -> Self {
        Self { lua, script: Script::from_lua(lua) }
    }

    /// Loads the script into Redis' script cache.
    pub(super) async fn load(&self, client: &Client) -> Result<(), FredError> {
        client.script_load::<(), _>(self.lua).await
    }

    /// One `EVALSHA` within `timeout`; when Redis has lost the script it is loaded and run
    /// once more (the failed call ran nothing).
    pub(super) async fn run(
        &self,
        client: &Client,
        keys: Vec<Key>,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Value, ScriptError> {
        // fred would queue the command until it reconnects; the caller needs an answer now.
        if !client.is_connected() {
            return Err(ScriptError::Unavailable(anyhow!("not connected to Redis")));
        }
        let call = async {
            match self.script.evalsha::<Value, _, _, _>(client, keys.clone(), args.clone()).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    self.load(client).await?;
                    self.script.evalsha::<Value, _, _, _>(client, keys, args).await
                }
                result => result,
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| {
                ScriptError::Unavailable(anyhow!("no answer from Redis within {} ms", timeout.as_millis()))
            })?
            .map_err(classify)
    }
}

/// A count or seq as a script argument; none comes near `i64::MAX`.
pub(super) fn integer(value: u64) -> Value {
    Value::from(i64::try_from(value).unwrap_or(i64::MAX))
}

/// A reply of an unexpected shape from the `script` script, named by its length and the
/// start of its first value only: replies hold event data, which does not belong in logs.
pub(super) fn unexpected_reply(script: &str, reply: &[Value]) -> anyhow::Error {
    let first = reply.first().map(|v| format!("{:.32}", v.as_str().unwrap_or_default()));
    anyhow!("the {script} script returned an unexpected reply ({} values, first {first:?})", reply.len())
}

/// A lost or slow connection is `Unavailable`; anything else (a script error) `Unexpected`.
/// fred reports a command it had no connection to send on (the connection dropped between
/// the connected check and the write, as when Redis restarts) as an `Unknown` error "Failed
/// to route command.": that is a lost connection too (found by the Redis restart tests).
fn classify(error: FredError) -> ScriptError {
    let unrouted =
        error.kind() == &ErrorKind::Unknown && error.details().starts_with("Failed to route command");
    let unavailable = unrouted
        || matches!(
            error.kind(),
            ErrorKind::IO
                | ErrorKind::Timeout
                | ErrorKind::Canceled
                | ErrorKind::Backpressure
                | ErrorKind::Routing
        );
    let error = anyhow::Error::new(error);
    if unavailable { ScriptError::Unavailable(error) } else { ScriptError::Unexpected(error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(error: FredError) -> bool {
        matches!(classify(error), ScriptError::Unavailable(_))
    }

    #[test]
    fn lost_connections_are_unavailable_and_script_errors_unexpected() {
        assert!(unavailable(FredError::new(ErrorKind::IO, "Connection closed.")));
        assert!(unavailable(FredError::new(ErrorKind::Timeout, "Request timed out.")));
        assert!(unavailable(FredError::new(ErrorKind::Unknown, "Failed to route command.")));
        assert!(unavailable(FredError::new(ErrorKind::Routing, "Failed to route command.")));
        assert!(!unavailable(FredError::new(ErrorKind::Unknown, "something else")));
        assert!(!unavailable(FredError::new(ErrorKind::Unknown, "ERR Error running script")));
    }
}
