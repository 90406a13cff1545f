//! The result of one load: gathered from the subscribers' outcomes, printed as a Markdown
//! table and optionally written as JSON; and the servers' resident memory.

use std::fmt::Write as _;

use serde::Serialize;

use crate::accounting::Histogram;
use crate::subscriber::Outcome;

/// Delivery figures of one group of subscribers (the normal ones, or the slow ones).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Delivery {
    pub subscribers: u64,
    pub connect_failures: u64,
    /// Event frames received.
    pub frames: u64,
    /// Events received (a coalesced frame counts every merged event).
    pub events: u64,
    /// Seqs never received by a subscriber, summed over subscribers.
    pub lost: u64,
    /// Subscribers that did not end with every seq.
    pub incomplete: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    pub coalesced_frames: u64,
    pub coalesced_events: u64,
    pub closes_1013: u64,
    pub resume_required: u64,
    pub other_closes: u64,
    pub error_frames: u64,
}

impl Delivery {
    /// Sums the outcomes of the subscribers for which `pick` holds; `last_seq[run]` is the
    /// last ingested seq of each run.
    pub fn gather(outcomes: &[Outcome], last_seq: &[u64], pick: impl Fn(&Outcome) -> bool) -> Self {
        let mut sum = Self::default();
        for outcome in outcomes.iter().filter(|o| pick(o)) {
            let t = &outcome.tracker;
            let last = last_seq[outcome.run];
            let missing = t.lost(last);
            sum.subscribers += 1;
            sum.connect_failures += u64::from(outcome.connect_failed);
            sum.frames += t.frames;
            sum.events += t.events;
            sum.lost += missing;
            sum.incomplete += u64::from(missing > 0);
            sum.duplicated += t.duplicates;
            sum.unexpected += t.unexpected;
            sum.coalesced_frames += t.coalesced_frames;
            sum.coalesced_events += t.coalesced_events;
            sum.closes_1013 += outcome.closes_1013;
            sum.resume_required += outcome.resume_required;
            sum.other_closes += outcome.other_closes;
            sum.error_frames += outcome.errors;
        }
        sum
    }
}

/// Resident memory (KiB) of the server processes at the three moments.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Memory {
    pub pids: Vec<u32>,
    pub before_kib: u64,
    /// After the first half of the subscribers subscribed.
    pub half_kib: u64,
    pub idle_kib: u64,
    pub end_kib: u64,
    /// `(idle - before) / connections`: what one idle subscribed connection costs.
    pub per_idle_connection_kib: Option<f64>,
    /// `(idle - half) / connections of the second half`: what one more idle subscribed
    /// connection costs, the servers' one-time growth left out.
    pub per_added_connection_kib: Option<f64>,
}

/// `VmRSS` of each pid, summed (KiB); a pid that cannot be read counts 0.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
        })
        .sum()
}

/// Latency percentiles (milliseconds) of the normal subscribers' events.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let ms = |micros: u64| micros as f64 / 1e3;
        Self {
            samples: histogram.count(),
            p50_ms: ms(histogram.quantile(0.50)),
            p99_ms: ms(histogram.quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// Everything one load measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    /// `sba` (the nodes) or `floor` (the tool's own broadcast server).
    pub target: String,
    pub nodes: usize,
    pub runs: usize,
    pub rate_target: f64,
    pub batch: usize,
    pub duration_s: f64,
    pub ingested_events: u64,
    /// Ingest calls (batches) sent.
    pub ingest_calls: u64,
    pub ingest_rate: f64,
    pub ingest_errors: u64,
    /// Seconds from the ingest's start to the last receipt at a normal subscriber.
    pub delivery_window_s: f64,
    /// Events delivered per second to the normal subscribers over that window.
    pub deliveries_per_s: f64,
    /// Event frames per second to the normal subscribers over that window.
    pub messages_per_s: f64,
    pub latency: Latency,
    pub normal: Delivery,
    pub slow: Delivery,
    pub memory: Memory,
}

impl Report {
    /// The Markdown table of this report (header and one row).
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| load | subscribers (slow) | target events/s | ingested events/s | deliveries/s | messages/s | p50 ms | p99 ms | max ms | lost | duplicated | coalesced events (frames) | 1013 closes | resume_required | server RSS KiB before → half → idle → end | KiB per idle connection (all; second half) |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let n = &self.normal;
        let s = &self.slow;
        let kib = |k: Option<f64>| k.map_or_else(|| "—".to_owned(), |k| format!("{k:.1}"));
        let per_connection = match self.memory.per_idle_connection_kib {
            None => "—".to_owned(),
            all => format!("{}; {}", kib(all), kib(self.memory.per_added_connection_kib)),
        };
        let memory = if self.memory.pids.is_empty() {
            "—".to_owned()
        } else {
            let m = &self.memory;
            format!("{} → {} → {} → {}", m.before_kib, m.half_kib, m.idle_kib, m.end_kib)
        };
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            self.label,
            n.subscribers + s.subscribers,
            s.subscribers,
            self.rate_target,
            self.ingest_rate,
            self.deliveries_per_s,
            self.messages_per_s,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            n.lost + s.lost,
            n.duplicated + s.duplicated,
            n.coalesced_events + s.coalesced_events,
            n.coalesced_frames + s.coalesced_frames,
            n.closes_1013 + s.closes_1013,
            n.resume_required + s.resume_required,
            memory,
            per_connection,
        );
        let _ = writeln!(
            out,
            "\n{} nodes, {} runs, batches of {}, {:.1} s of ingest ({} events in {} calls, {} ingest errors), delivery window {:.1} s; \
             connect failures {}; slow subscribers: {} events, {} lost, {} incomplete, {} 1013 closes; \
             other closes {}, error frames {}, seqs before after_seq {}.",
            self.nodes,
            self.runs,
            self.batch,
            self.duration_s,
            self.ingested_events,
            self.ingest_calls,
            self.ingest_errors,
            self.delivery_window_s,
            n.connect_failures + s.connect_failures,
            s.events,
            s.lost,
            s.incomplete,
            s.closes_1013,
            n.other_closes + s.other_closes,
            n.error_frames + s.error_frames,
            n.unexpected + s.unexpected,
        );
        out
    }
}
