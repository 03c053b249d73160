//! Logging never holds up a request: with a log reader that has stopped reading, the server keeps
//! answering, drops the lines it cannot queue and counts them on `/metrics`.

mod common;

use std::time::Duration;

use common::{heldout_digits, infer, shipped_models, Server};
use futures_util::stream::{self, StreamExt};
use serde_json::json;

/// Enough answered requests (one log line each, ~400 bytes in JSON) to fill a 64 KiB pipe and the
/// server's queue of 100 lines several times over.
const REQUESTS: usize = 1_500;

async fn dropped_log_lines(client: &reqwest::Client, server: &Server) -> u64 {
    let text = client.get(server.url("/metrics")).send().await.expect("scrape").text().await.expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix("spikeserve_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no spikeserve_log_lines_dropped_total in\n{text}"))
        .trim()
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_reader_drops_lines_instead_of_stalling_requests() {
    let server = Server::start(&shipped_models(), &["--log-queue-lines", "100"]);
    let client = reqwest::Client::new();
    assert_eq!(dropped_log_lines(&client, &server).await, 0, "nothing dropped while the log is read");
    let (inputs, _) = heldout_digits();

    server.stop_reading_log();
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        stream::iter(0..REQUESTS)
            .map(|i| {
                let body = json!({"input": inputs[i % inputs.len()]});
                let (client, base) = (client.clone(), server.base.clone());
                async move { infer(&client, &base, "digits", &body).await }
            })
            .buffer_unordered(16)
            .filter(|(status, _)| std::future::ready(*status == 200))
            .count()
            .await
    })
    .await
    .expect("requests kept being answered while nobody read the log");
    assert_eq!(answered, REQUESTS);

    let dropped = dropped_log_lines(&client, &server).await;
    // The pipe and the queue hold a few hundred lines; the rest cannot have been kept.
    assert!(dropped > 0 && dropped < REQUESTS as u64 + 10, "dropped {dropped} of {REQUESTS} lines");
}
