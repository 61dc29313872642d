//! Every configuration parameter the code reads is declared in the
//! registry (crates/config/src/params.rs), and every declared one is
//! documented. A parameter read but not declared would silently fall back
//! to nothing; this test makes that a build failure instead.

use epistle_config::params;

/// String literals in non-test source that look like parameter names
/// (`{...}` placeholders of format strings stand for one segment).
fn parameter_literals(src: &str) -> Vec<String> {
    let code = src.split("#[cfg(test)]").next().unwrap_or(src);
    let mut out = Vec::new();
    let pieces: Vec<&str> = code.split('"').collect();
    for (i, piece) in pieces.iter().enumerate().skip(1).step_by(2) {
        // A path joined onto a directory names a file, not a parameter.
        if pieces[i - 1].trim_end().ends_with("join(") {
            continue;
        }
        let looks_like = ["local.", "service.", "logfile.", "store.", "sasl."]
            .iter()
            .any(|p| piece.starts_with(p));
        let chars_ok = piece
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._{}".contains(c));
        // A file name, or a generic accessor whose last segment is a
        // placeholder (`logfile.{service}.{option}`): nothing to check here.
        let file_name = piece.ends_with(".conf") || piece.ends_with(".cnf") || piece.ends_with('}');
        if looks_like
            && chars_ok
            && !file_name
            && piece.split('.').count() >= 2
            && !piece.ends_with('.')
        {
            let mut name = String::new();
            let mut depth = 0;
            for c in piece.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        if depth == 1 {
                            name.push('x');
                        }
                    }
                    '}' => depth -= 1,
                    _ if depth == 0 => name.push(c),
                    _ => {}
                }
            }
            out.push(name);
        }
    }
    out
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_parameter_in_the_code_is_declared() {
    let root = epistle_tests::repo_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("tests/src"), &mut files);
    let mut seen = 0;
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        for name in parameter_literals(&src) {
            seen += 1;
            assert!(
                params::lookup(&name).is_some(),
                "{}: parameter {name:?} is not declared in params.rs",
                f.display()
            );
        }
    }
    assert!(
        seen > 20,
        "the scan found only {seen} parameter names: is it still looking in the right place?"
    );
}

#[test]
fn every_declared_parameter_is_documented() {
    for p in params::PARAMS {
        assert!(
            p.description.ends_with('.') && p.description.len() > 15,
            "{}: {:?}",
            p.name,
            p.description
        );
    }
}

#[test]
fn the_scan_reads_format_placeholders() {
    assert_eq!(
        parameter_literals(r#"x("local.probe.{name}.timeout")"#),
        ["local.probe.x.timeout"]
    );
    assert!(
        parameter_literals(r#""local.nothing""#.replace("nothing", "Has Caps").as_str()).is_empty()
    );
}
