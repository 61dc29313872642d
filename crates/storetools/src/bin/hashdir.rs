//! NAME
//!   hashdir - where an account's mailboxes live on a partition
//!
//! SYNOPSIS
//!   hashdir [-a] account
//!   hashdir -i            (reads account names, one a line)
//!
//! DESCRIPTION
//!   Prints the two-level hash directory of the account (`d1/a7`) below
//!   `<partition>/=user/`; with -a also the account's own directory
//!   (`d1/a7/=joe`).

use std::io::BufRead;
use std::process::ExitCode;

use epistle_store::names::{escape_userid, hashdir, validate_userid};

fn line(account: &str, full: bool) -> Result<String, String> {
    validate_userid(account).map_err(|e| format!("{account:?}: {e}"))?;
    Ok(if full {
        format!("{}/={}", hashdir(account), escape_userid(account))
    } else {
        hashdir(account)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "-a");
    let interactive = args.iter().any(|a| a == "-i");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let mut ok = true;
    let mut emit = |a: &str| match line(a, full) {
        Ok(l) => println!("{l}"),
        Err(e) => {
            eprintln!("hashdir: {e}");
            ok = false;
        }
    };
    if interactive {
        for l in std::io::stdin().lock().lines().map_while(Result::ok) {
            if !l.trim().is_empty() {
                emit(l.trim());
            }
        }
    } else if names.is_empty() {
        eprintln!("usage: hashdir [-a] account | hashdir -i");
        return ExitCode::FAILURE;
    } else {
        for n in names {
            emit(n);
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
