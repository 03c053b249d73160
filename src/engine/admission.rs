//! Who gets a batch slot first: priority classes, then the earliest deadline, then arrival; and
//! which batch sizes are stepped once before a model is served.

use std::cmp::Ordering;
use std::time::Instant;

/// A request's priority class: higher classes are admitted first and, when the queue is full,
/// refused last. A running request is never pre-empted for a higher class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// The highest class.
    pub const MAX: u8 = 3;
    /// What a request without a `priority` gets: above background work (0), below urgent (2, 3).
    pub const DEFAULT: Self = Self(1);

    /// The class `value`, if it is one (0 to [`Priority::MAX`]).
    pub fn new(value: u8) -> Option<Self> {
        (value <= Self::MAX).then_some(Self(value))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// The class as an index into per-class tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn label(self) -> &'static str {
        crate::metrics::PRIORITY_LABELS[self.index()]
    }
}

// The metrics label every class.
const _: () = assert!(crate::metrics::PRIORITY_LABELS.len() == Priority::MAX as usize + 1);

impl Default for Priority {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The order in which waiting requests take free batch slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Admission {
    /// Within a priority class, earliest deadline first; requests without a budget after those
    /// with one, by arrival.
    #[default]
    Deadline,
    /// First come, first served, whatever the class or budget (kept for comparison).
    Fifo,
}

/// What admission orders a waiting request by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rank {
    pub priority: Priority,
    pub deadline: Option<Instant>,
    pub sequence: u64,
}

impl Admission {
    /// `Less` when `a` should be admitted before `b`.
    pub(crate) fn order(self, a: &Rank, b: &Rank) -> Ordering {
        match self {
            Self::Fifo => a.sequence.cmp(&b.sequence),
            Self::Deadline => b
                .priority
                .cmp(&a.priority)
                .then_with(|| match (a.deadline, b.deadline) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                })
                .then_with(|| a.sequence.cmp(&b.sequence)),
        }
    }
}

/// Which request a full queue gives up for a higher class: the lowest class waiting, and within
/// it the newest (the one that has waited least). `Less` when `a` goes before `b`.
pub(crate) fn displace_first(a: &Rank, b: &Rank) -> Ordering {
    a.priority.cmp(&b.priority).then_with(|| b.sequence.cmp(&a.sequence))
}

/// The batch sizes stepped once at load, before the model is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WarmupBatches {
    /// 1, 2, 4, ... up to the slot count (and the slot count itself).
    #[default]
    PowersOfTwo,
    /// No warm-up.
    Off,
    /// These sizes (at most [`WarmupBatches::MAX_LISTED`]; each capped at the slot count).
    Listed { sizes: [u16; Self::MAX_LISTED], count: u8 },
}

impl WarmupBatches {
    pub const MAX_LISTED: usize = 16;

    /// The sizes to step for `slots` batch slots, ascending and without repeats.
    pub fn sizes(self, slots: usize) -> Vec<usize> {
        let mut sizes: Vec<usize> = match self {
            Self::Off => Vec::new(),
            Self::PowersOfTwo => {
                let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |s| s.checked_mul(2))
                    .take_while(|&s| s < slots)
                    .collect();
                sizes.push(slots);
                sizes
            }
            Self::Listed { sizes, count } => {
                sizes[..usize::from(count)].iter().map(|&s| usize::from(s).clamp(1, slots.max(1))).collect()
            }
        };
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
}

impl std::str::FromStr for WarmupBatches {
    type Err = String;

    /// `powers-of-two`, `off`, or a comma-separated list of batch sizes (`1,8,64`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "powers-of-two" => return Ok(Self::PowersOfTwo),
            "off" | "none" => return Ok(Self::Off),
            _ => {}
        }
        let mut sizes = [0u16; Self::MAX_LISTED];
        let mut count = 0usize;
        for part in text.split(',') {
            let size: u16 = part.trim().parse().map_err(|_| {
                format!(
                    "expected `powers-of-two`, `off` or batch sizes like `1,8,64`; `{}` is not a size",
                    part.trim()
                )
            })?;
            if size == 0 {
                return Err("a warm-up batch size must be at least 1".into());
            }
            if count == Self::MAX_LISTED {
                return Err(format!("at most {} warm-up batch sizes", Self::MAX_LISTED));
            }
            sizes[count] = size;
            count += 1;
        }
        Ok(Self::Listed { sizes, count: count as u8 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rank(priority: u8, deadline_ms: Option<u64>, sequence: u64, now: Instant) -> Rank {
        Rank {
            priority: Priority::new(priority).expect("class"),
            deadline: deadline_ms.map(|ms| now + Duration::from_millis(ms)),
            sequence,
        }
    }

    #[test]
    fn deadline_admission_orders_by_class_then_deadline_then_arrival() {
        let now = Instant::now();
        let mut waiting = [
            rank(1, None, 0, now),
            rank(1, Some(500), 1, now),
            rank(1, Some(20), 2, now),
            rank(2, None, 3, now),
            rank(0, Some(1), 4, now),
            rank(1, Some(20), 5, now),
        ];
        waiting.sort_by(|a, b| Admission::Deadline.order(a, b));
        let order: Vec<u64> = waiting.iter().map(|r| r.sequence).collect();
        assert_eq!(order, [3, 2, 5, 1, 0, 4]);
        waiting.sort_by(|a, b| Admission::Fifo.order(a, b));
        assert_eq!(waiting.iter().map(|r| r.sequence).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_full_queue_gives_up_the_newest_of_the_lowest_class() {
        let now = Instant::now();
        let waiting =
            [rank(2, None, 0, now), rank(0, None, 1, now), rank(0, Some(5), 2, now), rank(1, None, 3, now)];
        let first = waiting.iter().min_by(|a, b| displace_first(a, b)).expect("one");
        assert_eq!(first.sequence, 2);
    }

    #[test]
    fn warmup_sizes() {
        assert_eq!(WarmupBatches::PowersOfTwo.sizes(64), [1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(WarmupBatches::PowersOfTwo.sizes(48), [1, 2, 4, 8, 16, 32, 48]);
        assert_eq!(WarmupBatches::PowersOfTwo.sizes(1), [1]);
        assert!(WarmupBatches::Off.sizes(64).is_empty());
        let listed: WarmupBatches = "64, 8,1,8,500".parse().expect("a list");
        assert_eq!(listed.sizes(64), [1, 8, 64]);
        assert!("0".parse::<WarmupBatches>().is_err());
        assert!("eight".parse::<WarmupBatches>().unwrap_err().contains("`eight`"));
    }

    #[test]
    fn classes() {
        assert_eq!(Priority::default().get(), 1);
        assert!(Priority::new(Priority::MAX).is_some());
        assert!(Priority::new(Priority::MAX + 1).is_none());
        assert_eq!(Priority::new(3).map(Priority::label), Some("3"));
    }
}
