//! A subscriber's downlink: how many bits per second the SFU may send it,
//! estimated from the transport-wide feedback (TWCC) its browser returns for
//! what the SFU sends, and read by the subscriber's layer choice.
//!
//! The delay signal (arrival groups, trend, overuse) and the loss average
//! are the engine's GCC parts (heavy loss counts as over-use); the rate
//! control is ours, because a meeting SFU
//! needs two things a plain GCC does not give: no probing that stalls the
//! video of someone on a weak link, and a quick return once it recovers.
//! Over-use backs off to 85 % of what arrived and marks that rate as the
//! link's ceiling. Under a ceiling the target creeps back up to it and no
//! further: every step above it would mean a larger layer, whose keyframe
//! alone stalls a weak link. The ceiling rises to what arrives when that is
//! well above it without over-use, which is what a probe is for: the
//! subscriber's session sends padding beside its video
//! ([`super::forwarder::Forwarder::probe`]) when a larger layer is wanted
//! and does not fit, and stops it as soon as the estimate falls. Before the
//! first over-use the target grows by 50 % a second, bounded by four times
//! what is actually delivered (an idle link does not promise what it never
//! carried).

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
/// A ceiling rises only while no more than this share of packets is lost
/// (on average)...
const CLEAN_LOSS: f64 = 0.01;
/// Loss over this share of packets (on average) counts as over-use.
const HEAVY_LOSS: f64 = 0.1;
/// ...when this many times its rate arrives without over-use.
const LIFT: f64 = 1.25;
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
    /// When its episode began.
    start: Instant,
}

/// The delay-based rate control, a pure function of the signals handed in.
#[derive(Debug, Clone)]
pub struct RateControl {
    target: f64,
    /// The rate that last caused an over-use, and when.
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

    /// Folds in the delay signal and the rate arriving at the far end;
    /// `clean`: nothing was lost lately (a probe that loses packets shows
    /// no room, whatever arrived).
    pub fn update(&mut self, now: Instant, usage: Usage, received: Option<f64>, clean: bool) -> f64 {
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
                if episode.is_none() {
                    self.ceiling = Some(Ceiling { rate: received, start: now });
                }
                self.last_change = Some(now);
            }
            Usage::Under => {}
            Usage::Normal => {
                if self.last_change.is_some_and(|t| now.saturating_duration_since(t) < INTERVAL) {
                    return self.target;
                }
                let dt =
                    self.last_change.map_or(INTERVAL, |t| now.saturating_duration_since(t)).min(Duration::from_secs(1));
                // Well more arrived than the ceiling without over-use (a
                // probe, or the link got better): the link carries that
                // much, which is the new ceiling.
                if let (Some(c), Some(r), true) = (self.ceiling.as_mut(), received, clean) {
                    if r >= c.rate * LIFT {
                        c.rate = r;
                        self.target = self.target.max(r);
                    }
                }
                let grown = match self.ceiling {
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
    /// The estimate last logged (a change by a fifth is logged).
    logged: f64,
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
            logged: INITIAL_BPS,
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
        if let Some(r) = received {
            self.out.set_received(r);
        }
        let lost = reports.iter().filter(|r| !r.arrived).count();
        self.loss.update(now, lost, reports.len());
        let average_loss = self.loss.average_loss().unwrap_or(0.0);
        // Heavy loss is over-use too (a short queue overflows before its
        // delay shows much): the same back-off to what arrives, and the
        // same ceiling. What arrives while a queue overflows is what the
        // link carries; the engine's loss-based rate alone would fall with
        // every packet lost to a moment's burst, and then climb back into
        // the next one.
        if lost > 0 && average_loss > HEAVY_LOSS {
            usage = Usage::Over;
        }
        let clean = lost == 0 && average_loss < CLEAN_LOSS;
        let estimate = self.control.update(now, usage, received, clean);
        if (estimate - self.logged).abs() > self.logged * 0.2 {
            self.logged = estimate;
            tracing::debug!(
                estimate,
                ?received,
                ?usage,
                lost,
                reports = reports.len(),
                average_loss,
                "downlink estimate moved"
            );
        }
        self.out.set(estimate);
    }

    fn target_bitrate(&self) -> f64 {
        self.out.get() as f64
    }
}

/// When a subscriber's session probes its downlink: only while it holds a
/// wanted layer back, first 2 s after that began (an over-use that just
/// lowered the estimate has settled), then 4 s later, then every 5 s. A
/// probe that fails costs a moment's extra delay; a limit that lifted is
/// found within 5 s. After a probe that raised the estimate (by a fifth)
/// the next comes 1 s later, for the next layer up.
#[derive(Debug, Clone)]
pub struct ProbeSchedule {
    next: Option<Instant>,
    interval: Duration,
    /// The estimate when the last probe began.
    probed_at: Option<u64>,
}

const PROBE_FIRST: Duration = Duration::from_secs(2);
const PROBE_AFTER_GAIN: Duration = Duration::from_secs(1);
const PROBE_EVERY_MAX: Duration = Duration::from_secs(5);
const PROBE_GAIN: f64 = 1.2;
/// A call this much before a probe is due counts as on time (the session
/// asks every half second, and one a moment early would otherwise wait
/// for the next).
const PROBE_SLACK: Duration = Duration::from_millis(50);

impl Default for ProbeSchedule {
    fn default() -> Self {
        Self { next: None, interval: PROBE_FIRST, probed_at: None }
    }
}

impl ProbeSchedule {
    /// Whether to probe now, given whether the downlink holds a layer back
    /// and its estimate.
    pub fn due(&mut self, now: Instant, limited: bool, estimate: u64) -> bool {
        if !limited {
            *self = Self::default();
            return false;
        }
        if self.probed_at.is_some_and(|e| estimate as f64 >= e as f64 * PROBE_GAIN) {
            self.interval = PROBE_AFTER_GAIN;
            self.next = Some(now + PROBE_AFTER_GAIN);
            self.probed_at = None;
        }
        let next = *self.next.get_or_insert(now + self.interval);
        if now + PROBE_SLACK < next {
            return false;
        }
        self.interval = (self.interval * 2).min(PROBE_EVERY_MAX);
        self.next = Some(now + self.interval);
        self.probed_at = Some(estimate);
        true
    }
}

/// The latest downlink estimate of one connection, and what its feedback
/// says arrives, shared between its interceptor (writer) and its session
/// (reader).
#[derive(Debug, Clone, Default)]
pub struct Downlink(Arc<DownlinkState>);

#[derive(Debug, Default)]
struct DownlinkState {
    estimate: AtomicU64,
    received: AtomicU64,
}

impl Downlink {
    fn set(&self, bps: f64) {
        self.0.estimate.store(bps.max(0.0) as u64, Ordering::Relaxed);
    }

    fn set_received(&self, bps: f64) {
        self.0.received.store(bps.max(0.0) as u64, Ordering::Relaxed);
    }

    /// Bits per second; 0 before any estimate.
    pub fn get(&self) -> u64 {
        self.0.estimate.load(Ordering::Relaxed)
    }

    /// Bits per second the far end received lately, everything sent on
    /// the connection counted (what a probe adds to); 0 before it is known.
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
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
            c.update(*at, usage, Some(received), true);
        }
        c.target()
    }

    #[test]
    fn over_use_sets_a_ceiling_that_only_a_delivered_probe_raises() {
        let mut at = Instant::now();
        let mut c = RateControl::new(INITIAL_BPS);
        // A 300 kbit/s link: the queue grows, the target follows what arrives.
        let squeezed = run(&mut c, &mut at, 0.8, Usage::Over, 300_000.0);
        assert!((200_000.0..=260_000.0).contains(&squeezed), "{squeezed}");
        // Steady under the limit: it creeps back to the ceiling and stays
        // there, however long (no larger layer is tried on a guess).
        let steady = run(&mut c, &mut at, 60.0, Usage::Normal, 150_000.0);
        assert_eq!(steady, 300_000.0);
        // A probe the link cannot carry: what arrives is capped at the
        // link, below what lifts the ceiling, and its over-use finds the
        // same ceiling again.
        assert_eq!(run(&mut c, &mut at, 0.3, Usage::Normal, 310_000.0), 300_000.0);
        run(&mut c, &mut at, 0.3, Usage::Over, 310_000.0);
        let held = run(&mut c, &mut at, 9.0, Usage::Normal, 150_000.0);
        assert_eq!(held, 310_000.0);
        // Traffic a little above the ceiling does not move it...
        assert_eq!(run(&mut c, &mut at, 2.0, Usage::Normal, 360_000.0), 310_000.0);
        // Nor does a probe that loses packets, whatever arrived.
        let mut lossy = c.clone();
        lossy.update(at + Duration::from_millis(300), Usage::Normal, Some(500_000.0), false);
        assert_eq!(lossy.target(), 310_000.0);
        // ...but the limit lifted, a probe delivers half a megabit without
        // over-use: that is the new ceiling, and the target at once; it
        // stays there until a probe shows more.
        let lifted = run(&mut c, &mut at, 0.2, Usage::Normal, 500_000.0);
        assert_eq!(lifted, 500_000.0);
        assert_eq!(run(&mut c, &mut at, 10.0, Usage::Normal, 400_000.0), 500_000.0);
        let more = run(&mut c, &mut at, 0.2, Usage::Normal, 1_300_000.0);
        assert_eq!(more, 1_300_000.0);
    }

    #[test]
    fn probes_go_only_while_a_layer_is_held_back_and_ever_less_often() {
        let start = Instant::now();
        let mut schedule = ProbeSchedule::default();
        let probes = |schedule: &mut ProbeSchedule, from: u64, to: u64, limited: bool, estimate: u64| {
            (from..to)
                .filter(|ms| ms % 100 == 0)
                .filter(|ms| schedule.due(start + Duration::from_millis(*ms), limited, estimate))
                .collect::<Vec<u64>>()
        };
        assert!(probes(&mut schedule, 0, 10_000, false, 300_000).is_empty());
        assert_eq!(probes(&mut schedule, 10_000, 30_000, true, 300_000), [12_000, 16_000, 21_000, 26_000]);
        // Fitting again (the probe showed room): the next limit starts over.
        assert!(probes(&mut schedule, 30_000, 31_000, false, 300_000).is_empty());
        assert_eq!(probes(&mut schedule, 31_000, 36_000, true, 300_000), [33_000]);
        // A probe that raised the estimate: the next one follows a second later.
        assert_eq!(probes(&mut schedule, 36_000, 40_000, true, 500_000), [37_000, 39_000]);
        // Asked a moment before it is due (the session's ticks drift), a
        // probe goes then, not a tick later.
        let mut schedule = ProbeSchedule::default();
        assert!(!schedule.due(start, true, 300_000));
        assert!(!schedule.due(start + Duration::from_millis(1_900), true, 300_000));
        assert!(schedule.due(start + Duration::from_millis(1_999), true, 300_000));
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
