//! The compiled configuration `imsimta cnbuild` writes and the MTA's
//! programs read (the original's IMTA_CONFIG_DATA): every MTA text file,
//! checked together, in one file replaced atomically. A build that fails
//! leaves the previous compiled configuration in force, and a running
//! program sees either the old whole or the new whole, never a mix of
//! half-edited text files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::aliases::Aliases;
use crate::imtacnf::ImtaConfig;
use crate::mapping::Mappings;
use crate::optionfile::OptionFile;

/// The compiled configuration's file name, in `config/`.
pub const COMPILED_NAME: &str = "imta.compiled";
/// The text files read, in `config/`; only imta.cnf and mappings must
/// exist.
pub const SOURCES: &[&str] = &[
    "imta.cnf",
    "mappings",
    "option.dat",
    "job_controller.cnf",
    "dispatcher.cnf",
    "aliases",
];
const REQUIRED: &[&str] = &["imta.cnf", "mappings"];
/// How a channel option file's name ends (`tcp_local_option`): options
/// for that channel's program alone.
pub const CHANNEL_OPTION_SUFFIX: &str = "_option";
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Syntax(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
    #[error(
        "{path} is not a compiled configuration of this version ({message}); run imsimta cnbuild"
    )]
    Corrupt { path: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledConfig {
    format: u32,
    /// Seconds since the epoch of the build.
    pub built: i64,
    /// Every file read (imta.cnf includes too), by the name it was read by.
    pub files: BTreeMap<String, String>,
}

/// The parsed configuration programs work with.
#[derive(Debug, Clone)]
pub struct MtaConfig {
    pub imta: ImtaConfig,
    pub mappings: Mappings,
    pub options: OptionFile,
    pub job_controller: OptionFile,
    pub dispatcher: OptionFile,
    pub aliases: Aliases,
    /// The channel option files (`config/<channel>_option`), by channel.
    pub channel_options: BTreeMap<String, OptionFile>,
}

impl MtaConfig {
    /// An option from the channel's option file, if it has one.
    pub fn channel_option(&self, channel: &str, option: &str) -> Option<&str> {
        self.channel_options
            .get(&channel.to_ascii_lowercase())
            .and_then(|f| f.global(option))
    }

    /// The configuration in force: `config/imta.compiled` as the last
    /// `imsimta cnbuild` wrote it, parsed. Errors name the file.
    pub fn load(config_dir: &Path) -> Result<MtaConfig, BuildError> {
        let path = config_dir.join(COMPILED_NAME);
        CompiledConfig::load(&path)?
            .parse()
            .map_err(|e| BuildError::Corrupt {
                path: path.display().to_string(),
                message: e.to_string(),
            })
    }
}

/// `tcp_local_option`, not an editor's backup or a hidden file.
fn is_channel_option_file(name: &str) -> bool {
    name.len() > CHANNEL_OPTION_SUFFIX.len()
        && name.ends_with(CHANNEL_OPTION_SUFFIX)
        && !name.starts_with(['.', '<'])
}

fn option_file(files: &BTreeMap<String, String>, name: &str) -> Result<OptionFile, BuildError> {
    match files.get(name) {
        Some(text) => {
            OptionFile::parse(text).map_err(|e| BuildError::Syntax(format!("{name}: {e}")))
        }
        None => Ok(OptionFile::default()),
    }
}

impl CompiledConfig {
    /// Reads and checks the text files in `config_dir`.
    pub fn build(config_dir: &Path, now: i64) -> Result<CompiledConfig, BuildError> {
        let mut files = BTreeMap::new();
        for name in SOURCES {
            let path = config_dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    files.insert(name.to_string(), text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !REQUIRED.contains(name) => {}
                Err(source) => {
                    return Err(BuildError::Read {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        for entry in std::fs::read_dir(config_dir).map_err(|source| BuildError::Read {
            path: config_dir.display().to_string(),
            source,
        })? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_channel_option_file(&name) {
                continue;
            }
            let path = entry.path();
            let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Read {
                path: path.display().to_string(),
                source,
            })?;
            files.insert(name, text);
        }
        // Includes of imta.cnf and aliases are read relative to config/
        // and kept.
        let mut included = BTreeMap::new();
        let mut read = |name: &str| {
            let path = config_dir.join(name);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            included.insert(name.to_string(), text.clone());
            Ok(text)
        };
        let text = |name: &str| files.get(name).map_or("", String::as_str);
        ImtaConfig::parse("imta.cnf", text("imta.cnf"), &mut read)
            .map_err(|e| BuildError::Syntax(e.to_string()))?;
        Aliases::parse("aliases", text("aliases"), &mut read)
            .map_err(|e| BuildError::Syntax(e.to_string()))?;
        for (name, text) in included {
            files.entry(format!("<{name}")).or_insert(text);
        }
        let compiled = CompiledConfig {
            format: FORMAT,
            built: now,
            files,
        };
        compiled.parse()?;
        Ok(compiled)
    }

    /// Parses the files held (checked at build time, so only a damaged
    /// file fails here).
    pub fn parse(&self) -> Result<MtaConfig, BuildError> {
        let text = |name: &str| self.files.get(name).map_or("", String::as_str);
        let mut read = |name: &str| {
            self.files
                .get(&format!("<{name}"))
                .cloned()
                .ok_or_else(|| "not in the compiled configuration".to_string())
        };
        let imta = ImtaConfig::parse("imta.cnf", text("imta.cnf"), &mut read)
            .map_err(|e| BuildError::Syntax(e.to_string()))?;
        let aliases = Aliases::parse("aliases", text("aliases"), &mut read)
            .map_err(|e| BuildError::Syntax(e.to_string()))?;
        let mappings = Mappings::parse(self.files.get("mappings").map_or("", String::as_str))
            .map_err(|e| BuildError::Syntax(format!("mappings: {e}")))?;
        let mut channel_options = BTreeMap::new();
        for name in self.files.keys().filter(|n| is_channel_option_file(n)) {
            let channel = name.strip_suffix(CHANNEL_OPTION_SUFFIX).unwrap_or(name);
            let file = option_file(&self.files, name)?;
            crate::channel_options::check(&file)
                .map_err(|e| BuildError::Syntax(format!("{name}: {e}")))?;
            channel_options.insert(channel.to_ascii_lowercase(), file);
        }
        Ok(MtaConfig {
            channel_options,
            imta,
            mappings,
            options: option_file(&self.files, "option.dat")?,
            job_controller: option_file(&self.files, "job_controller.cnf")?,
            dispatcher: option_file(&self.files, "dispatcher.cnf")?,
            aliases,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), BuildError> {
        let json = serde_json::to_vec(self).expect("a map of strings serializes");
        epistle_config::write_atomically(path, &json, 0o644).map_err(|e| BuildError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<CompiledConfig, BuildError> {
        let bytes = std::fs::read(path).map_err(|source| BuildError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let corrupt = |message: String| BuildError::Corrupt {
            path: path.display().to_string(),
            message,
        };
        let c: CompiledConfig =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if c.format != FORMAT {
            return Err(corrupt(format!("format {}", c.format)));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_option_files_are_compiled_in_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::write(
            dir.join("imta.cnf"),
            "a b\n\nl\nlocalhost\n\ntcp_local smtp\ntcp_local-daemon\n",
        )
        .unwrap();
        std::fs::write(dir.join("mappings"), "").unwrap();
        std::fs::write(
            dir.join("tcp_local_option"),
            "! threads\nMAX_CLIENT_THREADS=4\n",
        )
        .unwrap();
        std::fs::write(dir.join(".tcp_old_option"), "MAX_CLIENT_THREADS=9\n").unwrap();
        let parsed = CompiledConfig::build(dir, 1).unwrap().parse().unwrap();
        assert_eq!(
            parsed.channel_option("TCP_local", "max_client_threads"),
            Some("4")
        );
        assert_eq!(
            parsed.channel_option("tcp_intranet", "MAX_CLIENT_THREADS"),
            None
        );
        assert_eq!(parsed.channel_options.len(), 1, "hidden files are not read");

        std::fs::write(dir.join("tcp_local_option"), "MAX_CLIENT_THREADS 4\n").unwrap();
        let e = CompiledConfig::build(dir, 2).unwrap_err().to_string();
        assert!(e.starts_with("tcp_local_option:"), "{e}");
        std::fs::write(dir.join("tcp_local_option"), "MAX_CLIENT_THREADS=many\n").unwrap();
        let e = CompiledConfig::build(dir, 3).unwrap_err().to_string();
        assert!(
            e.starts_with("tcp_local_option: MAX_CLIENT_THREADS=many"),
            "{e}"
        );
    }

    #[test]
    fn build_save_load_and_a_failed_build() {
        let dir = std::env::temp_dir().join(format!("epistle-compiled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("imta.cnf"), "<more.rules\n.  $U%$D@tcp_local-daemon\n\nl\nlocalhost\n\ntcp_local smtp\ntcp_local-daemon\n").unwrap();
        std::fs::write(dir.join("more.rules"), "example.com  $U%$D@localhost\n").unwrap();
        std::fs::write(dir.join("mappings"), "INTERNAL_IP\n\n  127.0.0.1 $Y\n").unwrap();
        let c = CompiledConfig::build(&dir, 1).unwrap();
        let path = dir.join(COMPILED_NAME);
        c.save(&path).unwrap();
        let loaded = CompiledConfig::load(&path).unwrap();
        assert_eq!(loaded, c);
        let parsed = loaded.parse().unwrap();
        assert_eq!(
            parsed.imta.rules.len(),
            2,
            "the include is part of the compiled form"
        );
        assert!(
            parsed
                .mappings
                .lookup("INTERNAL_IP", "127.0.0.1")
                .unwrap()
                .yes()
        );

        // A broken edit: the build names file and line and writes nothing.
        std::fs::write(dir.join("imta.cnf"), "a b\n\nl frob\nlocalhost\n").unwrap();
        let e = CompiledConfig::build(&dir, 2).unwrap_err();
        assert_eq!(e.to_string(), "imta.cnf:3: unknown channel keyword frob");
        assert_eq!(CompiledConfig::load(&path).unwrap().built, 1);

        std::fs::write(dir.join("imta.cnf"), "a b\n\nl\nlocalhost\n").unwrap();
        std::fs::write(dir.join("aliases"), "postmaster: a@b.c\nbroken line\n").unwrap();
        let e = CompiledConfig::build(&dir, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "aliases:2: an alias line is \"alias: address ...\""
        );

        std::fs::remove_file(dir.join("mappings")).unwrap();
        assert!(matches!(
            CompiledConfig::build(&dir, 3),
            Err(BuildError::Read { .. })
        ));
        std::fs::write(&path, b"{\"format\":99,\"built\":0,\"files\":{}}").unwrap();
        assert!(
            CompiledConfig::load(&path)
                .unwrap_err()
                .to_string()
                .contains("run imsimta cnbuild")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
