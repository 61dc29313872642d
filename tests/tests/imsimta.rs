//! imsimta cnbuild and test against a configured installation.

use epistle_tests::{Install, assert_ok, stderr, stdout};

#[test]
fn configure_compiles_and_test_rewrite_routes_the_factory_rules() {
    let i = Install::configured();
    assert!(
        i.base.join("config/imta.compiled").exists(),
        "configure compiles the MTA configuration"
    );
    let out = i.sbin(
        "imsimta",
        &[
            "test",
            "-rewrite",
            "Joe@Example.com",
            "bob@elsewhere.org",
            "x@[127.0.0.1]",
        ],
    );
    assert_ok(&out, "imsimta test -rewrite");
    let text = stdout(&out);
    let blocks: Vec<&str> = text.split("Address: ").skip(1).collect();
    assert_eq!(blocks.len(), 3, "{text}");
    assert!(
        blocks[0].contains("  channel = l\n")
            && blocks[0].contains("  address = Joe@example.com\n"),
        "{}",
        blocks[0]
    );
    assert!(
        blocks[0].contains("  channel tag = mail.example.com\n"),
        "{}",
        blocks[0]
    );
    assert!(
        blocks[1].contains("  channel = tcp_local\n") && blocks[1].contains("maytlsserver"),
        "{}",
        blocks[1]
    );
    assert!(
        blocks[2].contains("  channel = tcp_intranet\n"),
        "{}",
        blocks[2]
    );

    let out = i.sbin("imsimta", &["test", "-rewrite", "nodomain"]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("error = address \"nodomain\" has no @domain"));
}

#[test]
fn a_broken_edit_is_named_and_the_compiled_configuration_stays() {
    let i = Install::configured();
    let cnf = i.base.join("config/imta.cnf");
    let good = std::fs::read_to_string(&cnf).unwrap();
    // Route a new domain locally, without compiling yet.
    let edited = good.replacen("[]", "partner.example  $U%$D@mail.example.com\n[]", 1);
    std::fs::write(&cnf, &edited).unwrap();
    let image = stdout(&i.sbin("imsimta", &["test", "-rewrite", "a@partner.example"]));
    assert!(
        image.contains("channel = tcp_local"),
        "the compiled configuration is still the old one: {image}"
    );
    let text = stdout(&i.sbin(
        "imsimta",
        &["test", "-rewrite", "-noimage_file", "a@partner.example"],
    ));
    assert!(
        text.contains("channel = l"),
        "-noimage_file reads the text files: {text}"
    );

    // A typo: cnbuild names file and line and leaves the compiled form.
    let line = edited
        .lines()
        .position(|l| l.starts_with("tcp_local "))
        .unwrap()
        + 1;
    std::fs::write(&cnf, edited.replacen("tcp_local smtp", "tcp_local smpt", 1)).unwrap();
    let out = i.sbin("imsimta", &["cnbuild"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("imta.cnf:{line}: unknown channel keyword smpt")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("unchanged"));
    assert!(
        stdout(&i.sbin("imsimta", &["test", "-rewrite", "a@partner.example"]))
            .contains("channel = tcp_local")
    );

    // Fixed: cnbuild succeeds and the compiled configuration routes anew.
    std::fs::write(&cnf, &edited).unwrap();
    let out = i.sbin("imsimta", &["cnbuild"]);
    assert_ok(&out, "imsimta cnbuild");
    assert!(stdout(&out).contains("channels"));
    assert!(
        stdout(&i.sbin("imsimta", &["test", "-rewrite", "a@partner.example"]))
            .contains("channel = l")
    );
}

#[test]
fn test_mapping_probes_internal_ip() {
    let i = Install::configured();
    let out = i.sbin(
        "imsimta",
        &[
            "test",
            "-mapping",
            "-table=INTERNAL_IP",
            "127.0.0.1",
            "127.0.0.2",
        ],
    );
    assert_ok(&out, "imsimta test -mapping");
    let text = stdout(&out);
    assert!(
        text.contains("Input string: 127.0.0.1\nOutput string: \nOutput flags: [$Y]"),
        "{text}"
    );
    assert!(
        text.contains("Input string: 127.0.0.2\nOutput string: \nOutput flags: [$N]"),
        "{text}"
    );
    let out = i.sbin("imsimta", &["test", "-mapping", "-table=NO_SUCH", "x"]);
    assert!(!out.status.success() && stderr(&out).contains("no table NO_SUCH"));
    let out = i.sbin(
        "imsimta",
        &[
            "test",
            "-match",
            "*@*.example.com",
            "joe@mail.example.com",
            "joe@example.org",
        ],
    );
    assert_ok(&out, "imsimta test -match");
    assert_eq!(
        stdout(&out),
        "Input string: joe@mail.example.com\nMatch\n  $0 = joe\n  $1 = mail\nInput string: joe@example.org\nNo match\n"
    );
    let out = i.sbin("imsimta", &["frobnicate"]);
    assert!(!out.status.success() && stderr(&out).contains("usage"));
}
