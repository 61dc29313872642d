//! The question-and-answer form of configure (`-nodisplay`): each question
//! shows its default in brackets, Enter takes it, and a bad answer is
//! explained and asked again.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use crate::state::{self, Answers, EMBEDDED};

pub struct Prompter<R: BufRead> {
    input: R,
    tty: bool,
}

impl<R: BufRead> Prompter<R> {
    pub fn new(input: R, tty: bool) -> Self {
        Prompter { input, tty }
    }

    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            anyhow::bail!("input ended before configuration was complete; nothing was changed");
        }
        Ok(line.trim().to_string())
    }

    /// Asks until `check` accepts the answer (or the default).
    fn ask(
        &mut self,
        question: &str,
        default: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> anyhow::Result<String> {
        loop {
            print!("{question} [{default}]: ");
            io::stdout().flush()?;
            let line = self.read_line()?;
            let answer = if line.is_empty() {
                default.to_string()
            } else {
                line
            };
            match check(&answer) {
                Ok(()) => return Ok(answer),
                Err(e) => println!("  {e}"),
            }
        }
    }

    fn ask_secret(&mut self, question: &str) -> anyhow::Result<String> {
        print!("{question}: ");
        io::stdout().flush()?;
        let _echo = self.tty.then(EchoOff::new).flatten();
        let line = self.read_line();
        if self.tty {
            println!();
        }
        line
    }

    fn ask_directory(
        &mut self,
        what: &str,
        a_url: &str,
        a_dn: &str,
    ) -> anyhow::Result<(String, String, String)> {
        let url = self.ask(
            &format!("{what} directory: \"embedded\" or an LDAP URL (ldap://host:389)"),
            a_url,
            |v| {
                let lower = v.to_ascii_lowercase();
                if lower == EMBEDDED
                    || lower.starts_with("ldap://")
                    || lower.starts_with("ldaps://")
                {
                    Ok(())
                } else {
                    Err("answer embedded, or an ldap:// or ldaps:// URL".into())
                }
            },
        )?;
        if url.eq_ignore_ascii_case(EMBEDDED) {
            return Ok((EMBEDDED.into(), a_dn.into(), String::new()));
        }
        let dn = self.ask(&format!("{what} directory bind DN"), a_dn, |v| {
            if v.contains('=') {
                Ok(())
            } else {
                Err("a DN looks like cn=Directory Manager".into())
            }
        })?;
        let pw = self.ask_secret(&format!("{what} directory bind password"))?;
        Ok((url, dn, pw))
    }

    /// Walks through the guide's questions, starting from `d`.
    pub fn run(&mut self, d: Answers) -> anyhow::Result<Answers> {
        let mut a = d.clone();
        let dir = self.ask(
            "Directory for configuration and data files",
            &d.data_dir.display().to_string(),
            |v| {
                if v.starts_with('/') {
                    Ok(())
                } else {
                    Err("give an absolute path".into())
                }
            },
        )?;
        a.data_dir = PathBuf::from(dir);
        a.hostname = self.ask("Fully qualified name of this host", &d.hostname, |v| {
            state::check_hostname(v).map_err(|e| e.reason)
        })?;
        println!("Components: mta (Message Transfer Agent), store (Message Store),");
        println!("            webmail (Messenger Express), mmp (Messaging Multiplexor)");
        let comps = self.ask(
            "Components to configure, comma separated",
            &d.components.join(","),
            |v| {
                let list: Vec<String> = v
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect();
                let mut w = Vec::new();
                state::check_components(&list, &mut w).map_err(|e| e.reason)?;
                for warning in w {
                    println!("  Warning: {warning}");
                }
                Ok(())
            },
        )?;
        a.components = comps
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        a.system_user = self.ask(
            "System user that will own the files and run the servers",
            &d.system_user,
            |_| Ok(()),
        )?;
        a.system_group = self.ask("System group", &d.system_group, |_| Ok(()))?;
        (a.config_directory, a.config_binddn, a.config_password) =
            self.ask_directory("Configuration", &d.config_directory, &d.config_binddn)?;
        (a.ug_directory, a.ug_binddn, a.ug_password) =
            self.ask_directory("User/group", &d.ug_directory, &d.ug_binddn)?;
        a.ug_suffix = self.ask("User/group suffix", &d.ug_suffix, |v| {
            if v.contains('=') {
                Ok(())
            } else {
                Err("a suffix looks like o=usergroup".into())
            }
        })?;
        let pm_default = if d.postmaster.is_empty() {
            String::new()
        } else {
            d.postmaster.clone()
        };
        a.postmaster = self.ask(
            "Postmaster e-mail address (a mailbox an administrator reads)",
            &pm_default,
            |v| state::check_postmaster(v).map_err(|e| e.reason),
        )?;
        loop {
            let p1 = self.ask_secret("Password for the administrator accounts")?;
            if p1.chars().count() < 8 {
                println!("  use at least 8 characters");
                continue;
            }
            let p2 = self.ask_secret("The same password again")?;
            if p1 == p2 {
                a.admin_password = p1;
                break;
            }
            println!("  the passwords differ; try again");
        }
        let dom_default = if d.default_domain.is_empty() {
            a.hostname
                .split_once('.')
                .map(|(_, x)| x.to_string())
                .unwrap_or_default()
        } else {
            d.default_domain.clone()
        };
        a.default_domain = self.ask("Default e-mail domain", &dom_default, |v| {
            if v.contains('.') && epistle_config::params::valid_domain(v) {
                Ok(())
            } else {
                Err("give a domain such as example.com".into())
            }
        })?;
        let suffix = a.ug_suffix.clone();
        a.org_dn = self.ask(
            "Organization DN",
            &state::default_org_dn(&a.default_domain, &a.ug_suffix),
            |v| match state::check_org_dn(v, &suffix) {
                Ok(Some(w)) => {
                    println!("  Warning: {w}");
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e.reason),
            },
        )?;
        a.tls_cert = self.ask(
            "TLS certificate file (empty: generate a self-signed one)",
            "",
            |v| {
                if v.is_empty() || std::path::Path::new(v).is_file() {
                    Ok(())
                } else {
                    Err("no such file".into())
                }
            },
        )?;
        if !a.tls_cert.is_empty() {
            a.tls_key = self.ask("TLS private key file", "", |v| {
                if std::path::Path::new(v).is_file() {
                    Ok(())
                } else {
                    Err("no such file".into())
                }
            })?;
        }
        println!();
        println!("Ready to configure:");
        println!("  configuration and data : {}", a.data_dir.display());
        println!("  host                   : {}", a.hostname);
        println!("  components             : {}", a.components.join(", "));
        println!(
            "  system user:group      : {}:{}",
            a.system_user, a.system_group
        );
        println!("  configuration directory: {}", a.config_directory);
        println!(
            "  user/group directory   : {} ({})",
            a.ug_directory, a.ug_suffix
        );
        println!("  postmaster             : {}", a.postmaster);
        println!("  default domain         : {}", a.default_domain);
        println!("  organization DN        : {}", a.org_dn);
        let go = self.ask("Configure now?", "yes", |v| {
            epistle_config::params::parse_bool(v)
                .map(|_| ())
                .ok_or_else(|| "answer yes or no".into())
        })?;
        if epistle_config::params::parse_bool(&go) != Some(true) {
            anyhow::bail!("cancelled; nothing was changed");
        }
        Ok(a)
    }
}

/// Turns terminal echo off until dropped, for password questions.
struct EchoOff(nix::sys::termios::Termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).ok()?;
        Some(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.0);
    }
}
