//! NAME
//!   imexpire - apply the store's aging rules now
//!
//! SYNOPSIS
//!   imexpire [-n]
//!
//! DESCRIPTION
//!   Asks the running store server to apply config/store.expirerule at
//!   once (it also does so every day at store.expirestart o'clock). -n
//!   reports what would expire without removing anything. Prints one line
//!   per mailbox changed, then "Expire finished".

use std::process::ExitCode;

use epistle_ipc::store::{StoreReply, StoreRequest};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a != "-n") {
        eprintln!("usage: imexpire [-n]");
        return ExitCode::FAILURE;
    }
    let dry_run = !args.is_empty();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let c = storetools::connect("imexpire")
            .await
            .map_err(|e| e.to_string())?;
        c.request(StoreRequest::Expire { dry_run })
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(StoreReply::Names { names }) => {
            for l in names {
                println!("{l}");
            }
            println!("Expire finished");
            ExitCode::SUCCESS
        }
        Ok(other) => {
            eprintln!("imexpire: unexpected answer {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("imexpire: {e}");
            ExitCode::FAILURE
        }
    }
}
