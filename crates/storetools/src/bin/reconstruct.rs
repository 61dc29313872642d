//! NAME
//!   reconstruct - rebuild the store's mailbox list and index from its files
//!
//! SYNOPSIS
//!   reconstruct [-n] -m
//!   reconstruct -q
//!
//! DESCRIPTION
//!   Works through the running store server (start-msg store). -m scans
//!   every partition: mailboxes missing from the list are added back from
//!   their mailbox.meta, message files missing from the index are added
//!   (internal date from the file; flags are not in the files), index
//!   entries whose files are gone are dropped, counts and quota usage are
//!   recomputed. With -n it only reports. -q recomputes quota usage only.
//!   Prints one line per change; nothing printed means nothing was wrong.

use std::process::ExitCode;

use epistle_ipc::store::{StoreReply, StoreRequest};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dry_run = args.iter().any(|a| a == "-n");
    let quotas_only = args.iter().any(|a| a == "-q");
    let spool = args.iter().any(|a| a == "-m");
    if quotas_only == spool
        || args
            .iter()
            .any(|a| !["-n", "-q", "-m"].contains(&a.as_str()))
    {
        eprintln!("usage: reconstruct [-n] -m | reconstruct -q");
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let c = storetools::connect("reconstruct")
            .await
            .map_err(|e| e.to_string())?;
        c.request(StoreRequest::Reconstruct {
            dry_run,
            quotas_only,
        })
        .await
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(StoreReply::Names { names }) => {
            for l in names {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Ok(other) => {
            eprintln!("reconstruct: unexpected answer {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("reconstruct: {e}");
            ExitCode::FAILURE
        }
    }
}
