//! NAME
//!   imsimport - bring a user's mail over from another server's folders
//!
//! SYNOPSIS
//!   imsimport -u UID [-f FOLDER] PATH ...
//!
//! DESCRIPTION
//!   Imports each PATH into the store for account UID: an mbox file
//!   becomes the folder named like the file (or -f FOLDER), a Maildir
//!   (a directory with cur/ and new/) becomes -f FOLDER or INBOX, and a
//!   directory of mbox files and Maildir++ subfolders (.Sent, .Lists.rust)
//!   is imported folder by folder. Flags come from Maildir file names,
//!   internal dates from mbox From lines or file times. Folders are made
//!   as needed. Needs the store running; prints one line per folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use epistle_ipc::store_client::StoreClient;
use epistle_store::MailboxName;
use epistle_store::import::{maildir_flags, split_mbox};
use storetools::Progress;

fn main() -> ExitCode {
    storetools::main_with("imsimport", run)
}

fn file_time(p: &Path) -> i64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

fn is_maildir(p: &Path) -> bool {
    p.join("cur").is_dir() && p.join("new").is_dir()
}

/// (store folder, source) pairs for one PATH.
fn sources(path: &Path, folder: Option<&str>) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if path.is_file() {
        let name = folder.map(str::to_string).unwrap_or_else(|| {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("Imported")
                .to_string();
            if stem.eq_ignore_ascii_case("inbox") || stem.eq_ignore_ascii_case("mbox") {
                "INBOX".into()
            } else {
                stem
            }
        });
        return Ok(vec![(name, path.to_path_buf())]);
    }
    if !path.is_dir() {
        anyhow::bail!("{} is neither an mbox file nor a directory", path.display());
    }
    let mut out = Vec::new();
    if is_maildir(path) {
        out.push((folder.unwrap_or("INBOX").to_string(), path.to_path_buf()));
    }
    for e in std::fs::read_dir(path)?.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if ["cur", "new", "tmp"].contains(&name.as_str()) {
            continue;
        }
        if p.is_dir() && name.starts_with('.') && is_maildir(&p) {
            // Maildir++: ".Lists.rust" is the folder Lists/rust.
            out.push((name.trim_start_matches('.').replace('.', "/"), p));
        } else if p.is_file() && !name.starts_with('.') && !is_maildir(path) {
            out.push((
                p.file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or(&name)
                    .to_string(),
                p,
            ));
        }
    }
    out.sort();
    Ok(out)
}

async fn import_one(
    c: &StoreClient,
    mailbox: &str,
    src: &Path,
    progress: &mut Progress,
) -> anyhow::Result<usize> {
    let mut n = 0;
    if src.is_file() {
        let data = std::fs::read(src)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", src.display()))?;
        let fallback = file_time(src);
        for m in split_mbox(&data) {
            c.deliver(mailbox, &m.body, &[], m.date.unwrap_or(fallback))
                .await?;
            n += 1;
            progress.tick(mailbox);
        }
    } else {
        for sub in ["cur", "new"] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(src.join(sub))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for f in files {
                let name = f
                    .file_name()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_string();
                let body = std::fs::read(&f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
                c.deliver(mailbox, &body, &maildir_flags(&name), file_time(&f))
                    .await?;
                n += 1;
                progress.tick(mailbox);
            }
        }
    }
    Ok(n)
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let (mut user, mut folder, mut paths) = (None, None, Vec::new());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-u" => user = it.next(),
            "-f" => folder = it.next(),
            s if s.starts_with('-') => anyhow::bail!("unknown option {s}"),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let user =
        user.ok_or_else(|| anyhow::anyhow!("usage: imsimport -u UID [-f FOLDER] PATH ..."))?;
    if paths.is_empty() {
        anyhow::bail!("name at least one mbox file or Maildir");
    }
    let c = storetools::connect("imsimport").await?;
    let mut progress = Progress::new();
    for path in &paths {
        for (f, src) in sources(path, folder.as_deref())? {
            let mailbox = MailboxName::new(&user, &f)?.to_string();
            let n = import_one(&c, &mailbox, &src, &mut progress).await?;
            println!("{mailbox}: {n} messages from {}", src.display());
        }
    }
    progress.done();
    Ok(())
}
