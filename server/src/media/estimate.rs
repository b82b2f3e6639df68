//! A subscriber's downlink: how many bits per second the SFU may send it,
//! estimated from the transport-wide feedback (TWCC) its browser returns for
//! what the SFU sends, and read by the subscriber's layer choice.
//!
//! The delay signal (arrival groups, trend, overuse) and the loss half are
//! the engine's GCC parts; the rate control is ours, because a meeting SFU
//! needs two things a plain GCC does not give: no probing that stalls the
//! video of someone on a weak link, and a quick return once it recovers.
//! Over-use backs off to 85 % of what arrived and marks that rate as the
//! link's ceiling. While the ceiling is remembered the target creeps back
//! up to it and no further (every step above it would mean a larger layer,
//! whose keyframe alone stalls a weak link); the memory is 5 s, doubled up
//! to 40 s each time a probe above it fails at about the same rate. Past
//! it the target grows by 50 % a second, bounded by four times what is
//! actually delivered (an idle link does not promise what it never carried).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    BandwidthEstimator, LossController, OveruseDetector, PacketReport, RateCalculator, SlopeEstimator, Usage,
};

/// Where a new connection's estimate starts: a clear link until told otherwise.
pub const INITIAL_BPS: f64 = 1_500_000.0;
const MIN_BPS: f64 = 30_000.0;
const MAX_BPS: f64 = 20_000_000.0;

/// Back off to this share of what arrived.
const DECREASE: f64 = 0.85;
/// Growth per second away from a known ceiling.
const GROWTH: f64 = 1.5;
/// Growth per second near one (bits per second).
const CREEP_BPS: f64 = 60_000.0;
/// How long a ceiling is remembered after the over-use that found it, at
/// first and at most.
const CEILING_MEMORY: Duration = Duration::from_secs(5);
const CEILING_MEMORY_MAX: Duration = Duration::from_secs(40);
/// An over-use within this share of the last ceiling finds the same one.
const SAME_CEILING: f64 = 0.3;
/// The first second of over-use is one episode of congestion...
const EPISODE: Duration = Duration::from_millis(1_000);
/// ...which backs off from no less than this share of its first measure.
const EPISODE_FLOOR: f64 = 0.7;
/// Changes no more often than this (a decrease always goes at once).
const INTERVAL: Duration = Duration::from_millis(200);
/// The target is never more than this many times what arrives.
const HEADROOM: f64 = 4.0;

/// What an over-use taught about the link.
#[derive(Debug, Clone, Copy)]
struct Ceiling {
    rate: f64,
    /// The last over-use at it.
    at: Instant,
    memory: Duration,
    /// When its episode began.
    start: Instant,
}

/// The delay-based rate control, a pure function of the signals handed in.
#[derive(Debug, Clone)]
pub struct RateControl {
    target: f64,
    /// The rate that last caused an over-use, when, and for how long it is remembered.
    ceiling: Option<Ceiling>,
    last_change: Option<Instant>,
}

impl RateControl {
    /// Starts at `initial` bits per second.
    pub fn new(initial: f64) -> Self {
        Self { target: initial.clamp(MIN_BPS, MAX_BPS), ceiling: None, last_change: None }
    }

    /// The target, in bits per second.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// Folds in the delay signal and the rate arriving at the far end.
    pub fn update(&mut self, now: Instant, usage: Usage, received: Option<f64>) -> f64 {
        match usage {
            Usage::Over => {
                let Some(received) = received else { return self.target };
                let recent = self.last_change.is_some_and(|t| now.saturating_duration_since(t) < INTERVAL);
                if recent && self.target <= received {
                    return self.target;
                }
                // One congestion episode (over-use going on for a while):
                // what arrives while the queue overflows says less and less
                // about the link, so its first measure bounds the fall.
                let episode = self.ceiling.filter(|c| now.saturating_duration_since(c.start) < EPISODE);
                let base = episode.map_or(received, |c| received.max(c.rate * EPISODE_FLOOR));
                self.target = (base * DECREASE).clamp(MIN_BPS, MAX_BPS).min(self.target);
                self.ceiling = Some(match (episode, self.ceiling) {
                    (Some(c), _) => Ceiling { at: now, ..c },
                    // The same ceiling found again (a probe above it
                    // failed): remember it longer.
                    (None, Some(c)) if (received - c.rate).abs() <= c.rate * SAME_CEILING => {
                        Ceiling { rate: received, at: now, memory: (c.memory * 2).min(CEILING_MEMORY_MAX), start: now }
                    }
                    (None, _) => Ceiling { rate: received, at: now, memory: CEILING_MEMORY, start: now },
                });
                self.last_change = Some(now);
            }
            Usage::Under => {}
            Usage::Normal => {
                if self.last_change.is_some_and(|t| now.saturating_duration_since(t) < INTERVAL) {
                    return self.target;
                }
                let dt =
                    self.last_change.map_or(INTERVAL, |t| now.saturating_duration_since(t)).min(Duration::from_secs(1));
                let remembered = self.ceiling.filter(|c| now.saturating_duration_since(c.at) < c.memory);
                let grown = match remembered {
                    Some(c) => (self.target + CREEP_BPS * dt.as_secs_f64()).min(c.rate.max(self.target)),
                    None => self.target * GROWTH.powf(dt.as_secs_f64()),
                };
                let bound = received.map_or(MAX_BPS, |r| (r * HEADROOM).max(INITIAL_BPS));
                // Never lowered by the bound alone: only over-use and loss lower it.
                self.target = grown.min(bound).max(self.target).clamp(MIN_BPS, MAX_BPS);
                self.last_change = Some(now);
            }
        }
        self.target
    }
}

/// The estimator the congestion-control interceptor drives; it publishes its
/// target to the [`Downlink`] the session reads.
pub struct Estimator {
    slope: SlopeEstimator,
    detector: OveruseDetector,
    received: RateCalculator,
    control: RateControl,
    loss: LossController,
    out: Downlink,
}

impl std::fmt::Debug for Estimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Estimator").field("target", &self.control.target()).finish_non_exhaustive()
    }
}

impl Estimator {
    /// An estimator publishing to `out`.
    pub fn new(out: Downlink) -> Self {
        out.set(INITIAL_BPS);
        Self {
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            received: RateCalculator::default(),
            control: RateControl::new(INITIAL_BPS),
            loss: LossController::new(INITIAL_BPS, MIN_BPS, MAX_BPS),
            out,
        }
    }
}

impl BandwidthEstimator for Estimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        let mut usage = self.detector.usage();
        for report in reports {
            if report.arrived {
                self.received.add(now, report.size);
            }
            if let Some(trend) = self.slope.accumulate(report) {
                usage = self.detector.update(trend.at, trend.estimate_ms);
            }
        }
        let received = self.received.rate_bits_per_second(now);
        let delay = self.control.update(now, usage, received);
        let lost = reports.iter().filter(|r| !r.arrived).count();
        let loss = self.loss.update(now, lost, reports.len());
        self.out.set(delay.min(loss));
    }

    fn target_bitrate(&self) -> f64 {
        self.out.get() as f64
    }
}

/// The latest downlink estimate of one connection, shared between its
/// interceptor (writer) and its session (reader).
#[derive(Debug, Clone, Default)]
pub struct Downlink(Arc<AtomicU64>);

impl Downlink {
    fn set(&self, bps: f64) {
        self.0.store(bps.max(0.0) as u64, Ordering::Relaxed);
    }

    /// Bits per second; 0 before any estimate.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the control every 100 ms for `secs` with one signal and a
    /// delivered rate; returns the target after.
    fn run(c: &mut RateControl, at: &mut Instant, secs: f64, usage: Usage, received: f64) -> f64 {
        for _ in 0..(secs * 10.0) as usize {
            *at += Duration::from_millis(100);
            c.update(*at, usage, Some(received));
        }
        c.target()
    }

    #[test]
    fn over_use_backs_off_to_what_arrives_and_stays_under_the_ceiling_while_remembered() {
        let mut at = Instant::now();
        let mut c = RateControl::new(INITIAL_BPS);
        // A 300 kbit/s link: the queue grows, the target follows what arrives.
        let squeezed = run(&mut c, &mut at, 0.8, Usage::Over, 300_000.0);
        assert!((200_000.0..=260_000.0).contains(&squeezed), "{squeezed}");
        // Steady under the limit: it creeps back to the ceiling, not past it
        // (no larger layer is tried while the ceiling is remembered).
        let steady = run(&mut c, &mut at, 4.0, Usage::Normal, 150_000.0);
        assert_eq!(steady, 300_000.0);
        // Forgotten after 5 s: it grows again; a probe failing at the same
        // rate makes it remembered twice as long.
        let probing = run(&mut c, &mut at, 3.0, Usage::Normal, 150_000.0);
        assert!(probing > 400_000.0, "{probing}");
        run(&mut c, &mut at, 0.3, Usage::Over, 310_000.0);
        let held = run(&mut c, &mut at, 9.0, Usage::Normal, 150_000.0);
        assert!(held <= 310_000.0, "{held}: still remembered after 9 s");
        // The limit lifted: once forgotten it carries a 1 Mbit/s layer with
        // its 25 % margin within a few seconds (what arrives grows as
        // layers are switched up).
        let mut recovered = held;
        for (secs, delivered) in [(1.5, 150_000.0), (2.0, 300_000.0), (3.0, 500_000.0)] {
            recovered = run(&mut c, &mut at, secs, Usage::Normal, delivered);
        }
        assert!(recovered >= 1_250_000.0, "{recovered}");
    }

    #[test]
    fn what_arrives_while_the_queue_overflows_does_not_sink_the_target() {
        let mut at = Instant::now();
        let mut c = RateControl::new(INITIAL_BPS);
        run(&mut c, &mut at, 0.1, Usage::Over, 300_000.0);
        // The queue keeps overflowing while the sender switches down: the
        // delivered rate measured in it falls, the target does not follow...
        let after = run(&mut c, &mut at, 0.8, Usage::Over, 90_000.0);
        assert!((175_000.0..=180_000.0).contains(&after), "{after}");
        // ...unless it goes on: then that is the link.
        let lower = run(&mut c, &mut at, 0.6, Usage::Over, 90_000.0);
        assert!((75_000.0..=80_000.0).contains(&lower), "{lower}");
        // A new episode later is bounded by its own first measure.
        run(&mut c, &mut at, 3.0, Usage::Normal, 90_000.0);
        let first = run(&mut c, &mut at, 0.3, Usage::Over, 100_000.0);
        let again = run(&mut c, &mut at, 0.5, Usage::Over, 20_000.0);
        assert!((first - 85_000.0).abs() < 1.0 && (59_000.0..=60_000.0).contains(&again), "{first} {again}");
    }

    #[test]
    fn an_idle_link_promises_no_more_than_four_times_what_it_carries() {
        let mut at = Instant::now();
        let mut c = RateControl::new(INITIAL_BPS);
        let idle = run(&mut c, &mut at, 30.0, Usage::Normal, 50_000.0);
        assert_eq!(idle, INITIAL_BPS, "the bound never lowers it, nor lets it grow past the start");
        let busy = run(&mut c, &mut at, 30.0, Usage::Normal, 2_000_000.0);
        assert!((7_900_000.0..=8_000_000.0).contains(&busy), "{busy}");
        // Under-use holds; and nothing goes below the floor.
        assert_eq!(run(&mut c, &mut at, 1.0, Usage::Under, 10.0), busy);
        assert_eq!(run(&mut c, &mut at, 1.0, Usage::Over, 10.0), MIN_BPS);
    }
}
