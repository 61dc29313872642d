//! dispatcher.cnf as the dispatcher uses it (original.md §3.1): one
//! [`ServiceSpec`] per `[SERVICE=…]` section, global options as defaults.

use std::net::IpAddr;
use std::time::Duration;

use crate::optionfile::{OptionFile, int};

/// A service's listening and process limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// Every port (`PORT=25,465`), TLS ports included.
    pub ports: Vec<u16>,
    /// Ports where TLS starts at once (`TLS_PORT`).
    pub tls_ports: Vec<u16>,
    /// `INTERFACE_ADDRESS`; `None` for every interface.
    pub interface: Option<IpAddr>,
    /// The server program (`IMAGE`), the last path part
    /// (`tcp_smtp_server`), looked up in `msg_svr_base/lib`.
    pub image: String,
    /// `PARAMETER`, passed to the server (`CHANNEL=tcp_submit`).
    pub parameter: String,
    pub min_procs: usize,
    pub max_procs: usize,
    pub min_conns: usize,
    pub max_conns: usize,
    pub max_life_time: Duration,
    pub max_life_conns: u64,
    pub backlog: u32,
    /// Most connections one client address may hold at once
    /// (`MAX_CLIENT_CONNS`).
    pub max_client_conns: usize,
}

/// Most worker processes and connections per process accepted, so a typo
/// cannot fork-bomb the host.
pub const MAX_PROCS_LIMIT: usize = 256;
pub const MAX_CONNS_LIMIT: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dispatcher.cnf [SERVICE={service}]: {reason}")]
pub struct SpecError {
    pub service: String,
    pub reason: String,
}

fn ports(v: &str) -> Option<Vec<u16>> {
    v.split([',', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| int(p).and_then(|n| u16::try_from(n).ok()))
        .collect()
}

/// Every service of the file, in file order.
pub fn services(file: &OptionFile) -> Result<Vec<ServiceSpec>, SpecError> {
    let mut out = Vec::new();
    for s in file.sections.iter().filter(|s| s.kind == "SERVICE") {
        let name = s.name.clone();
        let err = |reason: String| SpecError {
            service: name.clone(),
            reason,
        };
        let opt = |o: &str| file.option("SERVICE", &name, o);
        let num = |o: &str, default: i64, lo: i64, hi: i64| -> Result<i64, SpecError> {
            match opt(o) {
                None => Ok(default),
                Some(v) => match int(v) {
                    Some(n) if (lo..=hi).contains(&n) => Ok(n),
                    _ => Err(err(format!("{o}={v} is not a number from {lo} to {hi}"))),
                },
            }
        };
        let port_list = |o: &str| -> Result<Vec<u16>, SpecError> {
            match opt(o) {
                None => Ok(Vec::new()),
                Some(v) => ports(v).ok_or_else(|| err(format!("{o}={v} is not a list of ports"))),
            }
        };
        let tls_ports = port_list("TLS_PORT")?;
        let mut ports = port_list("PORT")?;
        for p in &tls_ports {
            if !ports.contains(p) {
                ports.push(*p);
            }
        }
        if ports.is_empty() {
            return Err(err("no PORT".into()));
        }
        let interface = match opt("INTERFACE_ADDRESS").map(str::trim) {
            None | Some("") | Some("*") | Some("ANY") => None,
            Some(v) => Some(
                v.parse::<IpAddr>()
                    .map_err(|_| err(format!("INTERFACE_ADDRESS={v} is not an IP address")))?,
            ),
        };
        let image = opt("IMAGE")
            .map(|v| v.rsplit(['/', ':']).next().unwrap_or(v).trim().to_string())
            .unwrap_or_else(|| "tcp_smtp_server".into());
        if image.is_empty() || image.contains("..") {
            return Err(err(format!("IMAGE={image} is not a program name")));
        }
        let max_procs = num("MAX_PROCS", 5, 1, MAX_PROCS_LIMIT as i64)? as usize;
        let min_procs = num("MIN_PROCS", 0, 0, max_procs as i64)? as usize;
        let max_conns = num("MAX_CONNS", 20, 1, MAX_CONNS_LIMIT as i64)? as usize;
        let min_conns = num("MIN_CONNS", 5, 0, max_conns as i64)? as usize;
        let default_backlog = ((max_conns * max_procs) as i64).clamp(5, 65535);
        out.push(ServiceSpec {
            ports,
            tls_ports,
            interface,
            image,
            parameter: opt("PARAMETER").unwrap_or("").trim().to_string(),
            min_procs,
            max_procs,
            min_conns,
            max_conns,
            max_life_time: Duration::from_secs(num("MAX_LIFE_TIME", 86400, 1, 365 * 86400)? as u64),
            max_life_conns: num("MAX_LIFE_CONNS", 100, 1, i64::MAX)? as u64,
            backlog: num("BACKLOG", default_backlog, 1, 65535)? as u32,
            max_client_conns: num("MAX_CLIENT_CONNS", 100, 1, MAX_CONNS_LIMIT as i64)? as usize,
            name,
        });
    }
    Ok(out)
}

/// A `PARAMETER` value (`CHANNEL=tcp_submit,OTHER=x`) as pairs.
pub fn parameter(text: &str, name: &str) -> Option<String> {
    text.split([',', ' '])
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "MIN_PROCS=0\nMAX_PROCS=5\nMIN_CONNS=5\nMAX_CONNS=20\n\
        [SERVICE=SMTP]\nPORT=25\nIMAGE=IMTA_BIN:tcp_smtp_server\n\
        [SERVICE=SMTP_SUBMIT]\nPORT=587\nTLS_PORT=465\nPARAMETER=CHANNEL=tcp_submit\n\
        INTERFACE_ADDRESS=127.0.0.1\nMAX_PROCS=16%A\n";

    #[test]
    fn services_take_global_defaults() {
        let f = OptionFile::parse(SAMPLE).unwrap();
        let s = services(&f).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "SMTP");
        assert_eq!(s[0].ports, vec![25]);
        assert_eq!(s[0].image, "tcp_smtp_server");
        assert_eq!((s[0].min_procs, s[0].max_procs), (0, 5));
        assert_eq!(s[0].interface, None);
        assert_eq!(s[1].ports, vec![587, 465]);
        assert_eq!(s[1].tls_ports, vec![465]);
        assert_eq!(s[1].max_procs, 10);
        assert_eq!(s[1].interface, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            parameter(&s[1].parameter, "channel").as_deref(),
            Some("tcp_submit")
        );
    }

    #[test]
    fn bad_values_name_the_service_and_option() {
        for bad in [
            "PORT=99999",
            "PORT=x",
            "MAX_PROCS=0",
            "INTERFACE_ADDRESS=nowhere",
            "IMAGE=lib/",
        ] {
            let f = OptionFile::parse(&format!("[SERVICE=SMTP]\nPORT=25\n{bad}\n")).unwrap();
            let e = services(&f).unwrap_err();
            assert_eq!(e.service, "SMTP", "{bad}");
        }
        let f = OptionFile::parse("[SERVICE=SMTP]\nIMAGE=x\n").unwrap();
        assert!(services(&f).unwrap_err().reason.contains("PORT"));
    }
}
