//! job_controller.cnf as the job controller uses it (original.md §3.2):
//! pools with their `JOB_LIMIT`, and for each channel the program that
//! delivers its queue (`MASTER_COMMAND`).

use crate::compiled::MtaConfig;
use crate::imtacnf::ImtaConfig;
use crate::optionfile::{OptionFile, int};

/// Processes a pool may run at once when the file does not say.
pub const DEFAULT_JOB_LIMIT: usize = 10;
/// The most any pool may run, whatever the file says.
pub const MAX_JOB_LIMIT: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub job_limit: usize,
}

/// How a channel's queue is worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Master {
    /// A program in `msg_svr_base/lib` (the last part of MASTER_COMMAND).
    Program(String),
    /// Messages are dropped on delivery (the bitbucket channel).
    Discard,
    /// Never delivered: messages wait for `imsimta qm release` (hold).
    Hold,
    /// No MASTER_COMMAND: messages wait, and `imsimta qm` shows them.
    None,
}

/// The pools in file order; the first is the default for channels
/// without `pool`. `DEFAULT` exists even when the file has no pools.
pub fn pools(file: &OptionFile) -> Vec<Pool> {
    let mut out: Vec<Pool> = file
        .sections
        .iter()
        .filter(|s| s.kind == "POOL")
        .map(|s| Pool {
            name: s.name.clone(),
            job_limit: file
                .option("POOL", &s.name, "JOB_LIMIT")
                .and_then(int)
                .map_or(DEFAULT_JOB_LIMIT, |n| {
                    n.clamp(1, MAX_JOB_LIMIT as i64) as usize
                }),
        })
        .collect();
    if out.is_empty() {
        out.push(Pool {
            name: "DEFAULT".into(),
            job_limit: DEFAULT_JOB_LIMIT,
        });
    }
    out
}

/// The pool a channel runs in: its `pool` keyword when that pool exists
/// (requests for unknown pools go to the default, as the original
/// ignores them), else the first pool.
pub fn pool_of<'a>(pools: &'a [Pool], imta: &ImtaConfig, channel: &str) -> &'a Pool {
    let wanted = imta.channel(channel).and_then(|c| c.arg("pool"));
    wanted
        .and_then(|w| pools.iter().find(|p| p.name.eq_ignore_ascii_case(w)))
        .unwrap_or(&pools[0])
}

/// What works a channel's queue.
pub fn master(file: &OptionFile, channel: &str) -> Master {
    match channel {
        "bitbucket" => return Master::Discard,
        "hold" => return Master::Hold,
        _ => {}
    }
    let command = file
        .channel_section(channel)
        .and_then(|s| {
            s.options
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case("MASTER_COMMAND"))
        })
        .map(|(_, v)| v.trim());
    match command {
        None | Some("") | Some("NULL") => Master::None,
        Some(v) => {
            let program = v.rsplit(['/', ':']).next().unwrap_or(v).trim();
            if program.is_empty() || program.contains("..") {
                Master::None
            } else {
                Master::Program(program.to_string())
            }
        }
    }
}

/// The channel's `maxjobs`: most programs at once for it (default 1 per
/// original; our factory `defaults` sets 7).
pub fn max_jobs(imta: &ImtaConfig, channel: &str) -> usize {
    imta.channel(channel)
        .and_then(|c| c.arg("maxjobs"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, MAX_JOB_LIMIT)
}

/// A channel's `filesperjob`: how many due messages call for one more
/// delivery program (1 when absent).
pub fn files_per_job(imta: &ImtaConfig, channel: &str) -> usize {
    imta.channel(channel)
        .and_then(|c| c.arg("filesperjob"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, 100_000)
}

/// `threaddepth` when the channel does not set it (as the original).
pub const DEFAULT_THREAD_DEPTH: usize = 10;
/// `MAX_CLIENT_THREADS` when the channel's option file does not set it
/// (as the original).
pub const DEFAULT_MAX_CLIENT_THREADS: usize = 10;
/// The most delivery threads one program runs, whatever the files say.
pub const MAX_DELIVERY_THREADS: usize = 256;

/// How one channel program spreads its work over delivery threads (each
/// delivers one message at a time): one thread per `threaddepth` messages
/// it holds or sees waiting (imta.cnf), at most `MAX_CLIENT_THREADS` (the
/// channel's option file, `config/<channel>_option`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryThreads {
    pub depth: usize,
    pub max: usize,
}

impl DeliveryThreads {
    pub fn of(mta: &MtaConfig, channel: &str) -> DeliveryThreads {
        let depth = mta
            .imta
            .channel(channel)
            .and_then(|c| c.arg("threaddepth"))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_THREAD_DEPTH)
            .max(1);
        let max = mta
            .channel_option(channel, "MAX_CLIENT_THREADS")
            .and_then(int)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_CLIENT_THREADS)
            .clamp(1, MAX_DELIVERY_THREADS);
        DeliveryThreads { depth, max }
    }

    /// Threads wanted while `running` threads each hold a message and
    /// `waiting` more are due.
    pub fn wanted(&self, running: usize, waiting: usize) -> usize {
        running
            .saturating_add(waiting)
            .div_ceil(self.depth)
            .clamp(1, self.max)
    }
}

/// How many programs `due` messages call for: one per `filesperjob` of
/// them, at most `maxjobs`.
pub fn programs_wanted(imta: &ImtaConfig, channel: &str, due: usize) -> usize {
    due.div_ceil(files_per_job(imta, channel))
        .min(max_jobs(imta, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesperjob_divides_the_due_messages_among_programs() {
        let imta = ImtaConfig::parse(
            "imta.cnf",
            "\nl\nmail.example\n\nims-ms maxjobs 4 filesperjob 10\nims-ms-daemon\n\ntcp_local maxjobs 3\ntcp_local-daemon\n\ntcp_out maxjobs 5 threaddepth 4\ntcp_out-daemon\n\ntcp_both filesperjob 2 threaddepth 50 maxjobs 9\ntcp_both-daemon\n",
            &mut |_| Err("no includes".into()),
        )
        .unwrap();
        let wanted = |ch, due| programs_wanted(&imta, ch, due);
        assert_eq!(
            [0, 1, 10, 11, 35, 1000].map(|d| wanted("ims-ms", d)),
            [0, 1, 1, 2, 4, 4]
        );
        assert_eq!([0, 1, 2, 9].map(|d| wanted("tcp_local", d)), [0, 1, 2, 3]);
        assert_eq!(
            [1, 4, 5, 17, 100].map(|d| wanted("tcp_out", d)),
            [1, 4, 5, 5, 5],
            "threaddepth counts threads inside a program, not programs"
        );
        assert_eq!([3, 10].map(|d| wanted("tcp_both", d)), [2, 5]);
    }

    #[test]
    fn threaddepth_and_max_client_threads_size_a_programs_threads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("imta.cnf"),
            "\nl\nmail.example\n\ntcp_out threaddepth 4\ntcp_out-daemon\n\ntcp_plain\ntcp_plain-daemon\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("mappings"), "").unwrap();
        std::fs::write(dir.path().join("tcp_out_option"), "MAX_CLIENT_THREADS=3\n").unwrap();
        let mta = crate::compiled::CompiledConfig::build(dir.path(), 0)
            .unwrap()
            .parse()
            .unwrap();
        let out = DeliveryThreads::of(&mta, "tcp_out");
        assert_eq!(out, DeliveryThreads { depth: 4, max: 3 });
        // (running, waiting) -> threads
        assert_eq!(
            [(1, 0), (1, 3), (1, 4), (2, 6), (3, 1000)].map(|(r, w)| out.wanted(r, w)),
            [1, 1, 2, 2, 3]
        );
        let plain = DeliveryThreads::of(&mta, "tcp_plain");
        assert_eq!(
            plain,
            DeliveryThreads {
                depth: DEFAULT_THREAD_DEPTH,
                max: DEFAULT_MAX_CLIENT_THREADS
            }
        );
        assert_eq!(
            [(1, 9), (1, 10), (5, 500)].map(|(r, w)| plain.wanted(r, w)),
            [1, 2, 10]
        );
    }

    #[test]
    fn pools_and_masters() {
        let f = OptionFile::parse(
            "JOB_LIMIT=3\n[POOL=DEFAULT]\n[POOL=SMTP_POOL]\nJOB_LIMIT=7\n\
             [CHANNEL=ims-ms]\nMASTER_COMMAND=IMTA_BIN:ims_master\n\
             [CHANNEL=tcp_*]\nMASTER_COMMAND=msg_svr_base/lib/tcp_smtp_client\n",
        )
        .unwrap();
        let p = pools(&f);
        assert_eq!(p[0].job_limit, 3);
        assert_eq!(p[1].job_limit, 7);
        assert_eq!(master(&f, "ims-ms"), Master::Program("ims_master".into()));
        assert_eq!(
            master(&f, "tcp_local"),
            Master::Program("tcp_smtp_client".into())
        );
        assert_eq!(master(&f, "l"), Master::None);
        assert_eq!(master(&f, "bitbucket"), Master::Discard);
        assert_eq!(master(&f, "hold"), Master::Hold);
        assert_eq!(pools(&OptionFile::default())[0].name, "DEFAULT");
    }
}
