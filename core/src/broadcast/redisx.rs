//! The Redis Streams broadcaster (`broadcast_adapter=redisx`): AnyCable's durable Redis convention,
//! `XADD <redis_channel> * payload <publication JSON>`, read through the consumer group `bx`.
//!
//! Each entry goes to one consumer of the group, that is to one node ([`Reach::ThisNode`]): with several
//! nodes, a cluster pub/sub carries it to the others. An entry is acknowledged (`XACK`, then `XDEL`) only
//! after it was handed to the fan-out workers, so entries added while this node is down or disconnected
//! wait in the stream and are read when it is back; entries another consumer read but never acknowledged
//! are claimed after [`BLOCK`] (`XAUTOCLAIM`). Delivery is therefore at-least-once.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio_util::sync::CancellationToken;

use super::{IngressSink, Reach, accept_body};
use crate::engine::{self, Backoff, Outage, sleep_or_stop};

/// The consumer group, AnyCable's name, so nodes of both servers can share one stream.
pub(crate) const GROUP: &str = "bx";
/// How long one read waits for new entries; also the idle time after which pending entries are claimed.
const BLOCK: Duration = Duration::from_secs(2);
/// Entries read at once.
const BATCH: usize = 100;

/// Runs the consumer `consumer` until `stop`, then removes it from the group.
pub(crate) async fn run<S: IngressSink>(
    client: redis::Client,
    stream: String,
    consumer: String,
    sink: Arc<S>,
    stop: CancellationToken,
) {
    let what = format!("Redis Streams broadcaster (stream {stream:?} at {})", client.get_connection_info().addr());
    let mut outage = Outage::new(what.clone());
    let mut backoff = Backoff::default();
    let consequence = "entries wait in the stream until it is back";
    while !stop.is_cancelled() {
        let result = tokio::select! {
            r = consume(&client, &stream, &consumer, &*sink, &mut outage, &mut backoff, &what) => r,
            () = stop.cancelled() => break,
        };
        if let Err(error) = result {
            outage.down(&error, consequence);
        }
        if sleep_or_stop(backoff.next_delay(), &stop).await {
            break;
        }
    }
    // Best effort: a consumer left behind only lingers in XINFO; its entries are acknowledged already.
    let cleanup = async {
        let mut conn = engine::redis::connect(&client, Duration::from_secs(1)).await?;
        redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(&stream)
            .arg(GROUP)
            .arg(&consumer)
            .query_async::<i64>(&mut conn)
            .await
    };
    if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(2), cleanup).await {
        tracing::debug!(%error, "{what}: could not remove consumer {consumer}");
    }
}

/// One connection's worth of consuming; returns the error that ended it.
async fn consume<S: IngressSink>(
    client: &redis::Client,
    stream: &str,
    consumer: &str,
    sink: &S,
    outage: &mut Outage,
    backoff: &mut Backoff,
    what: &str,
) -> redis::RedisResult<()> {
    let mut conn = engine::redis::connect(client, BLOCK + Duration::from_secs(5)).await?;
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(&mut conn)
        .await;
    match created {
        Err(error) if error.code() != Some("BUSYGROUP") => return Err(error),
        _ => {}
    }
    outage.up();
    backoff.reset();
    tracing::debug!("{what}: consuming as {consumer} in group {GROUP}");
    let mut last_claim: Option<tokio::time::Instant> = None;
    loop {
        if last_claim.is_none_or(|at| at.elapsed() >= BLOCK) {
            let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(GROUP)
                .arg(consumer)
                .arg(BLOCK.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut conn)
                .await?;
            last_claim = Some(tokio::time::Instant::now());
            if !claimed.claimed.is_empty() {
                tracing::debug!(
                    entries = claimed.claimed.len(),
                    "{what}: claimed entries another consumer left pending"
                );
                deliver(&mut conn, stream, &claimed.claimed, sink, what).await?;
            }
        }
        let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        for key in read.map(|r| r.keys).unwrap_or_default() {
            deliver(&mut conn, stream, &key.ids, sink, what).await?;
        }
    }
}

/// Hands each entry's `payload` to the server, then acknowledges and deletes the entries.
async fn deliver<S: IngressSink>(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    entries: &[StreamId],
    sink: &S,
    what: &str,
) -> redis::RedisResult<()> {
    for entry in entries {
        match entry.get::<Vec<u8>>("payload") {
            Some(payload) => {
                accept_body(sink, &payload, Reach::ThisNode, what).await;
            }
            None => tracing::warn!(id = %entry.id, "{what}: entry without a `payload` field dropped"),
        }
    }
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    redis::pipe()
        .cmd("XACK")
        .arg(stream)
        .arg(GROUP)
        .arg(&ids)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(&ids)
        .ignore()
        .query_async::<()>(conn)
        .await
}
