//! When a deferred message is tried again, and when its sender hears
//! about it (original.md §1.4: `backoff`, `notices` and their defaults).
//!
//! `backoff "pt5m" "pt10m" …` lists ISO 8601 durations between attempts;
//! the last one repeats. Without it the defaults for the message's
//! priority apply (its `Priority:` field, lowered for size by the
//! channel's `urgentblocklimit` and `normalblocklimit`), as do
//! `urgentbackoff` / `nonurgentbackoff` and `urgentnotices` /
//! `nonurgentnotices` over the plain keywords. `notices a b c …` lists ages (days, or hours with
//! `RETURN_UNITS=1`): a delay warning at each but the last, the return
//! of the message at the last.

use std::time::Duration;

use crate::imtacnf::{Channel, ImtaConfig};

const MINUTE: u64 = 60;

/// Default minutes between attempts by priority; the last repeats.
const URGENT_MINUTES: [u64; 7] = [30, 60, 60, 120, 120, 120, 240];
const NORMAL_MINUTES: [u64; 7] = [60, 120, 120, 240, 240, 240, 480];
const NON_URGENT_MINUTES: [u64; 7] = [120, 240, 240, 480, 480, 480, 960];
/// Default notice ages (days) when neither the channel nor `l` says.
const DEFAULT_NOTICES: [u32; 4] = [3, 6, 9, 12];
/// `notices` takes at most this many ages.
pub const MAX_NOTICES: usize = 5;

/// A message's priority, highest first: the job controller hands out a
/// channel's due messages in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Urgent,
    Normal,
    NonUrgent,
    /// Below non-urgent: a non-urgent message bigger than the channel's
    /// `nonurgentblocklimit`. It waits for the job controller's next
    /// periodic pass over the queues before its first attempt; its retries
    /// and notices are the non-urgent ones.
    SecondClass,
}

impl Priority {
    /// A message's priority: its `Priority:` field (`urgent`, `normal`,
    /// `non-urgent`; normal when absent or other), lowered one step for a
    /// message bigger than the channel's `urgentblocklimit` (urgent to
    /// normal), `normalblocklimit` (normal to non-urgent) or
    /// `nonurgentblocklimit` (non-urgent to second class), in units of
    /// `block_size` bytes.
    /// `message` needs to hold the header section only; `size` is the
    /// whole message's.
    pub fn of_message(
        message: &[u8],
        size: u64,
        channel: Option<&Channel>,
        block_size: u64,
    ) -> Priority {
        let said = crate::header::field_value(message, "Priority")
            .map(|v| v.to_ascii_lowercase())
            .unwrap_or_default();
        let mut p = match said.as_str() {
            "urgent" => Priority::Urgent,
            "non-urgent" => Priority::NonUrgent,
            _ => Priority::Normal,
        };
        let blocks = size.div_ceil(block_size.max(1));
        let over = |keyword: &str| {
            channel
                .and_then(|c| c.arg(keyword))
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|limit| blocks > limit)
        };
        if p == Priority::Urgent && over("urgentblocklimit") {
            p = Priority::Normal;
        }
        if p == Priority::Normal && over("normalblocklimit") {
            p = Priority::NonUrgent;
        }
        if p == Priority::NonUrgent && over("nonurgentblocklimit") {
            p = Priority::SecondClass;
        }
        p
    }

    fn prefix(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::NonUrgent | Priority::SecondClass => "nonurgent",
        }
    }

    /// As the job controller is told it: 0 urgent to 3 second class.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The priority of a [`Priority::rank`]; normal for an unknown one.
    pub fn from_rank(rank: u8) -> Priority {
        match rank {
            0 => Priority::Urgent,
            2 => Priority::NonUrgent,
            3 => Priority::SecondClass,
            _ => Priority::Normal,
        }
    }
}

/// Parses an ISO 8601 duration such as `PT5M`, `P1DT12H` or `P2W`
/// (case-insensitive; years and months are refused as not fixed lengths).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let upper = text.trim().to_ascii_uppercase();
    let rest = upper.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut seconds: u64 = 0;
    let mut any = false;
    let mut add = |part: &str, units: &[(char, u64)]| -> Option<()> {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            // Units in order, each at most once.
            let at = units[next_unit..].iter().position(|(u, _)| *u == c)? + next_unit;
            let n: u64 = number.parse().ok()?;
            seconds = seconds.checked_add(n.checked_mul(units[at].1)?)?;
            number.clear();
            next_unit = at + 1;
            any = true;
        }
        number.is_empty().then_some(())
    };
    add(date, &[('W', 7 * 86_400), ('D', 86_400)])?;
    if let Some(time) = time {
        add(time, &[('H', 3600), ('M', MINUTE), ('S', 1)])?;
    }
    any.then_some(Duration::from_secs(seconds))
}

/// The intervals between delivery attempts on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    pub intervals: Vec<Duration>,
}

impl RetrySchedule {
    /// The channel's `<priority>backoff`, else its `backoff`, else the
    /// defaults for the priority.
    pub fn for_channel(channel: &Channel, priority: Priority) -> Result<RetrySchedule, String> {
        let specific = format!("{}backoff", priority.prefix());
        if let Some(k) = channel
            .last_of(&[&specific])
            .or_else(|| channel.last_of(&["backoff"]))
        {
            let intervals = k
                .args
                .iter()
                .map(|a| {
                    parse_duration(a).filter(|d| !d.is_zero()).ok_or_else(|| {
                        format!(
                            "channel {}: {} {a:?} is not an ISO 8601 duration such as \"pt30m\"",
                            channel.name, k.name
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(RetrySchedule { intervals });
        }
        let minutes = match priority {
            Priority::Urgent => &URGENT_MINUTES,
            Priority::Normal => &NORMAL_MINUTES,
            Priority::NonUrgent | Priority::SecondClass => &NON_URGENT_MINUTES,
        };
        Ok(RetrySchedule {
            intervals: minutes
                .iter()
                .map(|m| Duration::from_secs(m * MINUTE))
                .collect(),
        })
    }

    /// How long to wait after the `attempts`-th failed attempt (1-based).
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.intervals.len().saturating_sub(1));
        self.intervals
            .get(i)
            .copied()
            .unwrap_or(Duration::from_secs(3600))
    }
}

/// What the return job should do for a message of a given age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeAction {
    Nothing,
    /// Send the n-th delay warning (1-based).
    Warn(usize),
    /// Return the message to its sender.
    Return,
}

/// option.dat's `BLOCK_SIZE`: the unit of the `*blocklimit` keywords
/// (1024 bytes unless set).
pub fn block_size(options: &crate::optionfile::OptionFile) -> u64 {
    options
        .global("BLOCK_SIZE")
        .and_then(crate::optionfile::int)
        .filter(|n| *n > 0)
        .map_or(1024, |n| n as u64)
}

/// The largest message, bytes: option.dat's `BLOCK_LIMIT` (51,200 unless
/// set) times [`block_size`].
pub fn message_limit(options: &crate::optionfile::OptionFile) -> u64 {
    let blocks = options
        .global("BLOCK_LIMIT")
        .and_then(crate::optionfile::int)
        .filter(|n| *n > 0)
        .map_or(51_200, |n| n as u64);
    blocks.saturating_mul(block_size(options))
}

/// The unit of `notices` ages: a day, or an hour with option.dat's
/// `RETURN_UNITS=1`.
pub fn return_unit(options: &crate::optionfile::OptionFile) -> Duration {
    match options
        .global("RETURN_UNITS")
        .and_then(crate::optionfile::int)
    {
        Some(1) => Duration::from_secs(3_600),
        _ => Duration::from_secs(86_400),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notices {
    /// Ascending ages at which notices are due.
    pub ages: Vec<Duration>,
}

impl Notices {
    /// The channel's `<priority>notices` or `notices`, else the local
    /// channel's, else 3 6 9 12. `unit` is a day, or an hour with
    /// RETURN_UNITS=1.
    pub fn for_channel(
        config: &ImtaConfig,
        channel: &Channel,
        priority: Priority,
        unit: Duration,
    ) -> Result<Notices, String> {
        let specific = format!("{}notices", priority.prefix());
        let keyword = channel
            .last_of(&[&specific])
            .or_else(|| channel.last_of(&["notices"]))
            .or_else(|| config.channel("l").and_then(|l| l.last_of(&["notices"])));
        let values: Vec<u32> = match keyword {
            Some(k) => k
                .args
                .iter()
                .map(|a| a.parse::<u32>().ok().filter(|n| *n > 0))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    format!(
                        "channel {}: {} takes whole numbers above 0",
                        channel.name, k.name
                    )
                })?,
            None => DEFAULT_NOTICES.to_vec(),
        };
        if values.is_empty()
            || values.len() > MAX_NOTICES
            || values.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(format!(
                "channel {}: notices takes 1 to {MAX_NOTICES} ages in ascending order",
                channel.name
            ));
        }
        Ok(Notices {
            ages: values.into_iter().map(|v| unit * v).collect(),
        })
    }

    /// Given a message's age and how many warnings it has had, what is due.
    pub fn due(&self, age: Duration, warnings_sent: usize) -> NoticeAction {
        let Some((&last, warnings)) = self.ages.split_last() else {
            return NoticeAction::Nothing;
        };
        if age >= last {
            return NoticeAction::Return;
        }
        let reached = warnings.iter().filter(|&&a| age >= a).count();
        if reached > warnings_sent {
            NoticeAction::Warn(reached)
        } else {
            NoticeAction::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn config(text: &str) -> ImtaConfig {
        ImtaConfig::parse("imta.cnf", text, &mut |_| Err("no includes".into())).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("pt5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("PT1H30M"), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("P1DT12H"),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(parse_duration("P2W"), Some(14 * DAY));
        assert_eq!(parse_duration("PT45S"), Some(Duration::from_secs(45)));
        for bad in [
            "",
            "P",
            "PT",
            "5m",
            "PT5",
            "PT5X",
            "P1M",
            "PT5M1H",
            "PT5M5M",
            "P99999999999999999999D",
            "PTM",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn block_size_and_message_limit_from_option_dat() {
        use crate::optionfile::OptionFile;
        let none = OptionFile::parse("").unwrap();
        assert_eq!(block_size(&none), 1024);
        assert_eq!(message_limit(&none), 51_200 * 1024);
        let set = OptionFile::parse("BLOCK_SIZE=100\nBLOCK_LIMIT=10\n").unwrap();
        assert_eq!((block_size(&set), message_limit(&set)), (100, 1000));
    }

    #[test]
    fn priority_from_the_header_lowered_for_size() {
        let c = config(
            "a b\n\nl\nlocalhost\n\nsmall urgentblocklimit 1 normalblocklimit 2 nonurgentblocklimit 3\nsmall-daemon\n",
        );
        let small = c.channel("small");
        let urgent = b"Subject: x\r\npriority:  Urgent\r\n\r\nhi\r\n".to_vec();
        let of = |m: &[u8], size: u64, c| Priority::of_message(m, size, c, 1024);
        assert_eq!(of(&urgent, 40, None), Priority::Urgent);
        assert_eq!(of(&urgent, 1024, small), Priority::Urgent);
        assert_eq!(of(&urgent, 1025, small), Priority::Normal);
        assert_eq!(of(&urgent, 2049, small), Priority::NonUrgent);
        assert_eq!(of(&urgent, 3073, small), Priority::SecondClass);
        for p in [
            Priority::Urgent,
            Priority::Normal,
            Priority::NonUrgent,
            Priority::SecondClass,
        ] {
            assert_eq!(Priority::from_rank(p.rank()), p);
        }
        assert!(Priority::Urgent < Priority::SecondClass);
        let plain = b"Subject: x\r\n\r\nPriority: urgent\r\n".to_vec();
        assert_eq!(of(&plain, 40, small), Priority::Normal);
        let low = b"Priority: non-urgent\r\n\r\n".to_vec();
        assert_eq!(of(&low, 40, None), Priority::NonUrgent);
    }

    #[test]
    fn backoff_and_defaults() {
        let c = config(
            "a b\n\nl\nlocalhost\n\nims-ms backoff \"pt5m\" \"pt10m\" urgentbackoff \"pt1m\"\nims-ms-daemon\n",
        );
        let ms = c.channel("ims-ms").unwrap();
        let normal = RetrySchedule::for_channel(ms, Priority::Normal).unwrap();
        assert_eq!(normal.delay_after(1), Duration::from_secs(300));
        assert_eq!(normal.delay_after(2), Duration::from_secs(600));
        assert_eq!(
            normal.delay_after(50),
            Duration::from_secs(600),
            "the last interval repeats"
        );
        let urgent = RetrySchedule::for_channel(ms, Priority::Urgent).unwrap();
        assert_eq!(urgent.delay_after(3), Duration::from_secs(60));

        let l = c.channel("l").unwrap();
        let d = RetrySchedule::for_channel(l, Priority::Normal).unwrap();
        assert_eq!(d.delay_after(1), Duration::from_secs(3600));
        assert_eq!(d.delay_after(7), Duration::from_secs(480 * 60));
        assert_eq!(d.delay_after(100), Duration::from_secs(480 * 60));
        assert_eq!(
            RetrySchedule::for_channel(l, Priority::NonUrgent)
                .unwrap()
                .delay_after(1),
            Duration::from_secs(7200)
        );

        // cnbuild refuses a backoff that is not a duration, naming the line.
        let e = ImtaConfig::parse(
            "imta.cnf",
            "a b\n\nl\nlocalhost\n\nbad backoff \"pt5m\" \"soon\"\nbad-daemon\n",
            &mut |_| Err("no includes".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("imta.cnf:6:") && e.contains("\"soon\""),
            "{e}"
        );
    }

    #[test]
    fn notices_fall_back_to_l_then_the_default() {
        let c = config(
            "a b\n\nl notices 1 2 4\nlocalhost\n\ntcp_local smtp\ntcp_local-daemon\n\nims-ms notices 1 7 14 21 28\nims-ms-daemon\n",
        );
        let tcp = Notices::for_channel(&c, c.channel("tcp_local").unwrap(), Priority::Normal, DAY)
            .unwrap();
        assert_eq!(tcp.ages, [DAY, 2 * DAY, 4 * DAY]);
        let ms =
            Notices::for_channel(&c, c.channel("ims-ms").unwrap(), Priority::Normal, DAY).unwrap();
        assert_eq!(ms.ages.len(), 5);
        let bare = config("a b\n\nl\nlocalhost\n");
        let hourly = crate::optionfile::OptionFile::parse("RETURN_UNITS=1\n").unwrap();
        assert_eq!(return_unit(&hourly), Duration::from_secs(3_600));
        let daily = crate::optionfile::OptionFile::parse("RETURN_UNITS=0\n").unwrap();
        assert_eq!(return_unit(&daily), DAY);
        assert_eq!(return_unit(&Default::default()), DAY);
        let hours = Notices::for_channel(
            &bare,
            bare.channel("l").unwrap(),
            Priority::Normal,
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(
            hours.ages,
            [3, 6, 9, 12].map(|h| Duration::from_secs(h * 3600))
        );
        let bad = config("a b\n\nl notices 4 2\nlocalhost\n");
        assert!(
            Notices::for_channel(&bad, bad.channel("l").unwrap(), Priority::Normal, DAY).is_err()
        );
    }

    #[test]
    fn notice_actions() {
        let n = Notices {
            ages: vec![DAY, 2 * DAY, 4 * DAY],
        };
        assert_eq!(n.due(DAY / 2, 0), NoticeAction::Nothing);
        assert_eq!(n.due(DAY, 0), NoticeAction::Warn(1));
        assert_eq!(n.due(DAY + DAY / 2, 1), NoticeAction::Nothing);
        assert_eq!(n.due(3 * DAY, 1), NoticeAction::Warn(2));
        // A return job that missed a run sends one warning, not two.
        assert_eq!(n.due(3 * DAY, 0), NoticeAction::Warn(2));
        assert_eq!(n.due(4 * DAY, 2), NoticeAction::Return);
        assert_eq!(
            Notices { ages: vec![DAY] }.due(DAY, 0),
            NoticeAction::Return
        );
    }
}
