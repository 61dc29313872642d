//! job_controller.cnf as the job controller uses it (original.md §3.2):
//! pools with their `JOB_LIMIT`, and for each channel the program that
//! delivers its queue (`MASTER_COMMAND`).

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
/// delivery program (1 when absent). Without it, `threaddepth` (in the
/// original, messages per thread of a multi-threaded SMTP client) counts
/// the same way, since each program here delivers one message at a time:
/// one more program, and so one more connection out, per that many due
/// messages.
pub fn files_per_job(imta: &ImtaConfig, channel: &str) -> usize {
    imta.channel(channel)
        .and_then(|c| c.arg("filesperjob").or_else(|| c.arg("threaddepth")))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, 100_000)
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
            [1, 1, 2, 5, 5]
        );
        assert_eq!(
            [3, 10].map(|d| wanted("tcp_both", d)),
            [2, 5],
            "filesperjob first"
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
