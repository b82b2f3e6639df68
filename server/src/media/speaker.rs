//! The active speaker of a room, from the RFC 6464 audio levels publishers
//! put on their audio packets.
//!
//! Two halves:
//! - [`LevelMeter`], one per publisher (shared by its audio tracks' readers,
//!   which record every level they read before fan-out): the levels of the
//!   last [`WINDOW`]. A publisher is *speaking* when enough packets arrived
//!   in the window and their mean level is at or below [`SPEAKING_LEVEL`]
//!   (levels are −dBov: lower is louder). The voice-activity flag is not
//!   required: senders set it inconsistently (browsers' VAD does not flag
//!   every sound), so, as other SFUs do, the level alone decides.
//! - [`SpeakerTracker`], one per room: the decision, evaluated every
//!   [`EVALUATE_EVERY`] by the room's evaluator task (so it changes a few
//!   times per second at most, and is announced only on change).
//!
//! Smoothing, so the speaker does not flicker:
//! - the window's mean absorbs bursts shorter than about half of it;
//! - nobody → somebody needs the same loudest publisher on [`ELECT_TICKS`]
//!   consecutive evaluations; somebody → somebody else needs the challenger
//!   on [`SWITCH_TICKS`] consecutive evaluations, and while the current
//!   speaker still speaks the challenger must be louder by [`SWITCH_MARGIN`];
//! - the speaker is kept through pauses and cleared only after
//!   [`CLEAR_AFTER`] with nobody speaking;
//! - a publisher leaving the room is forgotten at once (if it was the
//!   speaker, the decision becomes "nobody" immediately).
//!
//! Nothing here panics on input: levels come from the network and are
//! clamped to the 7 bits RFC 6464 gives them.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use app::model::SessionId;

/// How far back a publisher's levels count.
pub const WINDOW: Duration = Duration::from_millis(400);
/// How often each room decides.
pub const EVALUATE_EVERY: Duration = Duration::from_millis(200);
/// Mean level (−dBov) at or below which a publisher is speaking.
pub const SPEAKING_LEVEL: u8 = 60;
/// Packets needed in the window for a verdict (Opus sends 50/s).
pub const MIN_SAMPLES: usize = 5;
/// Consecutive evaluations before somebody becomes the speaker of a quiet room.
pub const ELECT_TICKS: u32 = 2;
/// Consecutive evaluations before the speaker changes to somebody else.
pub const SWITCH_TICKS: u32 = 3;
/// How much louder (dB) a challenger must be while the speaker still speaks.
pub const SWITCH_MARGIN: u8 = 3;
/// With nobody speaking this long, there is no speaker.
pub const CLEAR_AFTER: Duration = Duration::from_secs(1);
/// Bound on the samples kept per publisher, whatever rate it sends at.
const MAX_SAMPLES: usize = 256;

/// One publisher's recent audio levels.
#[derive(Debug, Default)]
pub struct LevelMeter {
    samples: Mutex<VecDeque<Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    level: u8,
}

impl LevelMeter {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the level of one packet (−dBov, clamped to 127).
    pub fn record(&self, at: Instant, level: u8) {
        let mut samples = self.lock();
        trim(&mut samples, at);
        if samples.len() >= MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(Sample { at, level: level.min(127) });
    }

    /// Forgets every level (the publisher's audio is suppressed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The mean level of the window if the publisher is speaking at `now`.
    pub fn speaking(&self, now: Instant) -> Option<u8> {
        let mut samples = self.lock();
        trim(&mut samples, now);
        let n = samples.len();
        if n < MIN_SAMPLES {
            return None;
        }
        let sum: usize = samples.iter().map(|s| usize::from(s.level)).sum();
        let mean = u8::try_from(sum / n).unwrap_or(127);
        (mean <= SPEAKING_LEVEL).then_some(mean)
    }
}

fn trim(samples: &mut VecDeque<Sample>, now: Instant) {
    while samples.front().is_some_and(|s| now.saturating_duration_since(s.at) > WINDOW) {
        samples.pop_front();
    }
}

/// A change of a room's decision: the new speaker, or nobody.
pub type Decision = Option<SessionId>;

/// One room's active-speaker decision.
#[derive(Debug, Default)]
pub struct SpeakerTracker {
    current: Option<SessionId>,
    /// The publisher that would replace the current decision, and for how
    /// many consecutive evaluations it has.
    challenger: Option<(SessionId, u32)>,
    /// The last evaluation at which somebody spoke.
    last_voice: Option<Instant>,
    /// Decisions changed so far.
    changes: u64,
}

impl SpeakerTracker {
    /// The current speaker.
    pub fn current(&self) -> Option<&SessionId> {
        self.current.as_ref()
    }

    /// How many times the decision changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// One evaluation. `speaking`: each speaking publisher's mean level.
    /// Returns the new decision when it changed.
    pub fn evaluate(&mut self, now: Instant, speaking: &[(SessionId, u8)]) -> Option<Decision> {
        let loudest = speaking.iter().min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        if loudest.is_some() {
            self.last_voice = Some(now);
        }
        let Some(current) = self.current.clone() else {
            let Some((candidate, _)) = loudest else {
                self.challenger = None;
                return None;
            };
            return (self.challenge(candidate) >= ELECT_TICKS).then(|| self.set(Some(candidate.clone())));
        };
        let current_level = speaking.iter().find(|(s, _)| *s == current).map(|(_, level)| *level);
        let contender = loudest.filter(|(s, level)| {
            *s != current && current_level.is_none_or(|cur| level.saturating_add(SWITCH_MARGIN) <= cur)
        });
        if let Some((candidate, _)) = contender {
            if self.challenge(candidate) >= SWITCH_TICKS {
                return Some(self.set(Some(candidate.clone())));
            }
            return None;
        }
        self.challenger = None;
        let quiet = self.last_voice.is_none_or(|at| now.saturating_duration_since(at) >= CLEAR_AFTER);
        (loudest.is_none() && quiet).then(|| self.set(None))
    }

    /// A publisher left the room: forgotten. Returns the new decision when
    /// it was the speaker (nobody, at once).
    pub fn remove(&mut self, session: &SessionId) -> Option<Decision> {
        if self.challenger.as_ref().is_some_and(|(s, _)| s == session) {
            self.challenger = None;
        }
        (self.current.as_ref() == Some(session)).then(|| self.set(None))
    }

    /// Counts one more consecutive evaluation for `candidate`.
    fn challenge(&mut self, candidate: &SessionId) -> u32 {
        match &mut self.challenger {
            Some((s, n)) if s == candidate => {
                *n = n.saturating_add(1);
                *n
            }
            _ => {
                self.challenger = Some((candidate.clone(), 1));
                1
            }
        }
    }

    fn set(&mut self, decision: Decision) -> Decision {
        self.challenger = None;
        self.current = decision.clone();
        self.changes += 1;
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> SessionId {
        SessionId::new(s)
    }

    /// Feeds `level` at 50 packets/s from `from` for `span`.
    fn feed(meter: &LevelMeter, from: Instant, span: Duration, level: u8, voice: bool) {
        let mut at = from;
        while at < from + span {
            let _ = voice; // the flag does not decide (see the module docs)
            meter.record(at, level);
            at += Duration::from_millis(20);
        }
    }

    #[test]
    fn a_meter_speaks_on_a_loud_window_only() {
        let t0 = Instant::now();
        let meter = LevelMeter::default();
        assert_eq!(meter.speaking(t0), None, "no packets");
        feed(&meter, t0, Duration::from_millis(400), 30, true);
        assert_eq!(meter.speaking(t0 + Duration::from_millis(400)), Some(30));
        // Old levels leave the window.
        assert_eq!(meter.speaking(t0 + Duration::from_secs(2)), None);
        // Loud without the voice flag still counts (the level decides).
        let unvoiced = LevelMeter::default();
        feed(&unvoiced, t0, Duration::from_millis(400), 20, false);
        assert_eq!(unvoiced.speaking(t0 + Duration::from_millis(400)), Some(20));
        // A 100 ms burst among silence is not speech.
        let burst = LevelMeter::default();
        feed(&burst, t0, Duration::from_millis(300), 127, true);
        feed(&burst, t0 + Duration::from_millis(300), Duration::from_millis(100), 0, true);
        assert_eq!(burst.speaking(t0 + Duration::from_millis(400)), None);
        // Out-of-range levels are clamped.
        let wild = LevelMeter::default();
        feed(&wild, t0, Duration::from_millis(400), 255, true);
        assert_eq!(wild.speaking(t0 + Duration::from_millis(400)), None);
        meter.clear();
        assert_eq!(meter.speaking(t0 + Duration::from_millis(400)), None);
    }

    #[test]
    fn a_meter_keeps_a_bounded_number_of_samples() {
        let t0 = Instant::now();
        let meter = LevelMeter::default();
        for _ in 0..10_000 {
            meter.record(t0, 10);
        }
        assert_eq!(meter.lock().len(), MAX_SAMPLES);
    }

    #[test]
    fn the_speaker_is_elected_switched_and_cleared_with_hysteresis() {
        let (a, b) = (sid("a"), sid("b"));
        let mut t = Instant::now();
        let mut tracker = SpeakerTracker::default();
        let mut tick = |tracker: &mut SpeakerTracker, speaking: &[(SessionId, u8)]| {
            t += EVALUATE_EVERY;
            tracker.evaluate(t, speaking)
        };
        assert_eq!(tick(&mut tracker, &[]), None);
        assert_eq!(tick(&mut tracker, &[(a.clone(), 30)]), None, "one evaluation is not enough");
        assert_eq!(tick(&mut tracker, &[(a.clone(), 30)]), Some(Some(a.clone())));
        // B a little louder than A: within the margin, A stays.
        for _ in 0..10 {
            assert_eq!(tick(&mut tracker, &[(a.clone(), 30), (b.clone(), 28)]), None);
        }
        // B clearly louder: after SWITCH_TICKS evaluations.
        for _ in 1..SWITCH_TICKS {
            assert_eq!(tick(&mut tracker, &[(a.clone(), 30), (b.clone(), 10)]), None);
        }
        assert_eq!(tick(&mut tracker, &[(a.clone(), 30), (b.clone(), 10)]), Some(Some(b.clone())));
        // B pauses briefly: kept.
        for _ in 0..3 {
            assert_eq!(tick(&mut tracker, &[]), None);
        }
        assert_eq!(tracker.current(), Some(&b));
        // Nobody for CLEAR_AFTER: cleared.
        let mut cleared = None;
        for _ in 0..10 {
            if let Some(d) = tick(&mut tracker, &[]) {
                cleared = Some(d);
                break;
            }
        }
        assert_eq!(cleared, Some(None));
        assert_eq!(tracker.changes(), 3);
    }

    #[test]
    fn alternating_loudest_does_not_flip_the_speaker() {
        let (a, b) = (sid("a"), sid("b"));
        let mut t = Instant::now();
        let mut tracker = SpeakerTracker::default();
        for _ in 0..ELECT_TICKS {
            t += EVALUATE_EVERY;
            tracker.evaluate(t, &[(a.clone(), 30)]);
        }
        assert_eq!(tracker.current(), Some(&a));
        for i in 0..50 {
            t += EVALUATE_EVERY;
            let speaking =
                if i % 2 == 0 { [(a.clone(), 40), (b.clone(), 10)] } else { [(a.clone(), 10), (b.clone(), 40)] };
            assert_eq!(tracker.evaluate(t, &speaking), None, "evaluation {i}");
        }
        assert_eq!(tracker.changes(), 1);
    }

    /// Meters fed at 50 packets/s and the tracker evaluated every
    /// EVALUATE_EVERY, on an injected clock: `level(person, ms)` gives each
    /// person's level at that moment. Returns the tracker.
    fn talk(people: &[SessionId], ms: u64, level: impl Fn(usize, u64) -> u8) -> SpeakerTracker {
        let t0 = Instant::now();
        let meters: Vec<LevelMeter> = people.iter().map(|_| LevelMeter::default()).collect();
        let mut tracker = SpeakerTracker::default();
        let every = EVALUATE_EVERY.as_millis() as u64;
        for at in (0..ms).step_by(20) {
            let now = t0 + Duration::from_millis(at);
            for (i, meter) in meters.iter().enumerate() {
                meter.record(now, level(i, at));
            }
            if at % every == 0 {
                let speaking: Vec<(SessionId, u8)> =
                    people.iter().zip(&meters).filter_map(|(p, m)| m.speaking(now).map(|l| (p.clone(), l))).collect();
                tracker.evaluate(now, &speaking);
            }
        }
        tracker
    }

    #[test]
    fn short_loud_bursts_do_not_take_the_floor() {
        let (a, b) = (sid("a"), sid("b"));
        // Ada speaks steadily; from 2 s on, Bob coughs: 100 ms, much louder, every 700 ms.
        let tracker = talk(&[a.clone(), b.clone()], 6_000, |who, ms| match who {
            0 => 30,
            _ if ms >= 2_000 && (ms - 2_000) % 700 < 100 => 0,
            _ => 127,
        });
        assert_eq!(tracker.current(), Some(&a));
        assert_eq!(tracker.changes(), 1, "only Ada's election");
    }

    #[test]
    fn two_taking_turns_every_100_ms_do_not_flip_the_speaker() {
        let (a, b) = (sid("a"), sid("b"));
        // Ada alone for 1 s, then each much louder in turns of 100 ms for 3 s.
        let tracker = talk(&[a.clone(), b.clone()], 4_000, |who, ms| {
            let ada_turn = ms < 1_000 || (ms / 100) % 2 == 1;
            match (who, ada_turn) {
                (0, true) | (1, false) => 10,
                _ if ms < 1_000 => 127,
                _ => 40,
            }
        });
        // Unsmoothed, the loudest would change at every evaluation (~15 times).
        assert!(tracker.changes() <= 3, "{} changes", tracker.changes());
    }

    #[test]
    fn a_leaving_speaker_is_cleared_at_once() {
        let (a, b) = (sid("a"), sid("b"));
        let mut t = Instant::now();
        let mut tracker = SpeakerTracker::default();
        for _ in 0..ELECT_TICKS {
            t += EVALUATE_EVERY;
            tracker.evaluate(t, &[(a.clone(), 30), (b.clone(), 50)]);
        }
        assert_eq!(tracker.remove(&b), None, "not the speaker");
        assert_eq!(tracker.remove(&a), Some(None));
        assert_eq!(tracker.remove(&a), None, "idempotent");
    }
}
