//! `userPassword` values: verifying a login against every scheme a
//! directory migrated from Sun, OpenLDAP or a Unix host is likely to hold,
//! and hashing new passwords with a strong one.
//!
//! Supported: `{SSHA}`, `{SSHA256}`, `{SSHA512}`, `{SHA}`, `{SHA256}`,
//! `{SHA512}`, `{CRYPT}` with `$1$` (MD5-crypt), `$5$`, `$6$` (SHA-crypt)
//! and `$2a$`/`$2b$`/`$2y$` (bcrypt), `{PBKDF2}`, `{PBKDF2-SHA256}`,
//! `{PBKDF2-SHA512}` (OpenLDAP's `iterations$salt$hash` in adapted
//! base64), `{ARGON2}` (PHC string) and, for old directories, clear text.
//! Every comparison of secrets is constant-time.

use argon2::Argon2;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Longest password considered: longer input is refused outright, so a
/// client cannot make the server hash megabytes.
pub const MAX_PASSWORD: usize = 1024;

/// The scheme a stored value uses, for logs and migration reports.
pub fn scheme(stored: &str) -> &str {
    match stored.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((s, _)) => s,
        None => "CLEARTEXT",
    }
}

/// Does `given` match the stored `userPassword` value?
pub fn verify(stored: &str, given: &str) -> bool {
    if given.is_empty() || given.len() > MAX_PASSWORD {
        return false;
    }
    let pw = given.as_bytes();
    let Some((tag, rest)) = stored.strip_prefix('{').and_then(|r| r.split_once('}')) else {
        return ct_eq(stored.as_bytes(), pw);
    };
    match tag.to_ascii_uppercase().as_str() {
        "SSHA" => salted::<Sha1>(rest, pw, 20),
        "SSHA256" => salted::<Sha256>(rest, pw, 32),
        "SSHA512" => salted::<Sha512>(rest, pw, 64),
        "SHA" => plain_digest::<Sha1>(rest, pw),
        "SHA256" => plain_digest::<Sha256>(rest, pw),
        "SHA512" => plain_digest::<Sha512>(rest, pw),
        "CRYPT" => crypt(rest, pw),
        "PBKDF2" | "PBKDF2-SHA1" => pbkdf2_openldap(rest, pw, Prf::Sha1),
        "PBKDF2-SHA256" => pbkdf2_openldap(rest, pw, Prf::Sha256),
        "PBKDF2-SHA512" => pbkdf2_openldap(rest, pw, Prf::Sha512),
        "ARGON2" => {
            use argon2::password_hash::PasswordVerifier;
            Argon2::default().verify_password(pw, rest).is_ok()
        }
        "CLEARTEXT" => ct_eq(rest.as_bytes(), pw),
        _ => false,
    }
}

/// The clear-text secret a stored value holds, if it holds one (no
/// scheme, or `{CLEARTEXT}`): only such a value lets a server check a
/// challenge-response such as POP3's APOP, which needs the secret itself.
pub fn clear_secret(stored: &str) -> Option<&str> {
    match stored.strip_prefix('{').and_then(|r| r.split_once('}')) {
        None => Some(stored),
        Some((tag, rest)) if tag.eq_ignore_ascii_case("CLEARTEXT") => Some(rest),
        Some(_) => None,
    }
}

/// Does `digest` (hexadecimal) answer the APOP challenge `timestamp` for
/// the stored value (RFC 1939 §7: MD5 of the timestamp and the secret)?
pub fn verify_apop(stored: &str, timestamp: &str, digest: &str) -> bool {
    let Some(secret) = clear_secret(stored).filter(|s| !s.is_empty()) else {
        return false;
    };
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(secret.as_bytes());
    let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    ct_eq(want.as_bytes(), digest.to_ascii_lowercase().as_bytes())
}

/// Hashes a new password for storage: `{ARGON2}` with argon2id and the
/// crate's recommended cost (19 MiB, 2 passes).
pub fn hash(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(format!("a password must have 1 to {MAX_PASSWORD} bytes"));
    }
    let h = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(format!("{{ARGON2}}{h}"))
}

/// Is the stored value weak enough to be re-hashed at the next login?
pub fn is_weak(stored: &str) -> bool {
    !matches!(
        scheme(stored).to_ascii_uppercase().as_str(),
        "ARGON2" | "PBKDF2-SHA512"
    )
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

/// `{SSHA*}`: base64(digest(password + salt) + salt).
fn salted<D: Digest>(rest: &str, pw: &[u8], len: usize) -> bool {
    let Some(raw) = decode_b64(rest) else {
        return false;
    };
    if raw.len() <= len {
        return false;
    }
    let (digest, salt) = raw.split_at(len);
    let mut h = D::new();
    h.update(pw);
    h.update(salt);
    ct_eq(&h.finalize(), digest)
}

/// `{SHA*}`: base64(digest(password)).
fn plain_digest<D: Digest>(rest: &str, pw: &[u8]) -> bool {
    let Some(raw) = decode_b64(rest) else {
        return false;
    };
    ct_eq(&D::digest(pw), &raw)
}

fn crypt(rest: &str, pw: &[u8]) -> bool {
    if let Some(body) = rest.strip_prefix("$1$") {
        let salt = body.split('$').next().unwrap_or("");
        return ct_eq(md5_crypt(pw, salt.as_bytes()).as_bytes(), rest.as_bytes());
    }
    if rest.starts_with("$5$") || rest.starts_with("$6$") {
        use sha_crypt::password_hash::PasswordVerifier;
        return sha_crypt::ShaCrypt::default()
            .verify_password(pw, rest)
            .is_ok();
    }
    if rest.starts_with("$2a$") || rest.starts_with("$2b$") || rest.starts_with("$2y$") {
        // bcrypt looks at 72 bytes at most; longer passwords are refused
        // rather than silently truncated.
        return pw.len() <= 72 && bcrypt::verify(pw, rest).unwrap_or(false);
    }
    false
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// MD5-crypt (`$1$`), as in FreeBSD and glibc: no maintained crate has it.
pub fn md5_crypt(pw: &[u8], salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let mut alt = Md5::new();
    alt.update(pw);
    alt.update(salt);
    alt.update(pw);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(b"$1$");
    ctx.update(salt);
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = pw.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(pw);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }
    let mut out = String::from("$1$");
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(fin[i]);
    for (x, y, z) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64((b(x) << 16) | (b(y) << 8) | b(z), 4);
    }
    to64(b(11), 2);
    out
}

#[derive(Clone, Copy)]
enum Prf {
    Sha1,
    Sha256,
    Sha512,
}

/// OpenLDAP's pw-pbkdf2 form: `iterations$salt$hash`, both in "adapted"
/// base64 (`.` for `+`, no padding).
fn pbkdf2_openldap(rest: &str, pw: &[u8], prf: Prf) -> bool {
    let mut parts = rest.split('$');
    let (Some(iter), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(rounds) = iter.parse::<u32>() else {
        return false;
    };
    // Bounded so a hostile directory value cannot stall the server.
    if rounds == 0 || rounds > 10_000_000 {
        return false;
    }
    let ab64 = |s: &str| STANDARD_NO_PAD.decode(s.replace('.', "+")).ok();
    let (Some(salt), Some(expected)) = (ab64(salt), ab64(hash)) else {
        return false;
    };
    if expected.is_empty() || expected.len() > 64 {
        return false;
    }
    let mut out = vec![0u8; expected.len()];
    match prf {
        Prf::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(pw, &salt, rounds, &mut out),
        Prf::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(pw, &salt, rounds, &mut out),
        Prf::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(pw, &salt, rounds, &mut out),
    }
    ct_eq(&out, &expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apop() {
        // RFC 1939 §7's example.
        let ts = "<1896.697170952@dbc.mtview.ca.us>";
        assert!(verify_apop(
            "tanstaaf",
            ts,
            "c4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(verify_apop(
            "{CLEARTEXT}tanstaaf",
            ts,
            "C4C9334BAC560ECC979E58001B3E22FB"
        ));
        assert!(!verify_apop(
            "tanstaaf",
            ts,
            "c4c9334bac560ecc979e58001b3e22fc"
        ));
        assert!(!verify_apop(
            "{SSHA}abc",
            ts,
            "c4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(!verify_apop("", ts, "d41d8cd98f00b204e9800998ecf8427e"));
    }

    // Made with openssl passwd, OpenLDAP's slappasswd, Python's crypt and
    // hashlib: independent implementations of each scheme, password "secret".
    const VECTORS: &[&str] = &[
        "{ARGON2}$argon2i$v=19$m=4096,t=3,p=1$IjzvUDdlGhJG0bu/y07oRA$wBPa8YtArks10zGKha7Bk7QJwDc2GjQcCHsxQvdRnBY",
        "{SSHA}kPkjOusHXAK9ufvgcQoGrWRzsKTKMNmS",
        "{SSHA}lHFzXul4wnzRItssVcTnvXWRjNgBAgMEBQYHCA==",
        "{SSHA256}A7N1lAy5bBb4T6qH9e85zAvHBmzNPhRFbZ105DjjWDIBAgMEBQYHCA==",
        "{SSHA512}KO8EsMPQTwZrxxbOkDAOOXEeVCc2grMQg1pnZwZhC1bBQLby8zCmFn7qTZRvoTd+yQdROQQNYHWpTUST4zjTdQECAwQFBgcI",
        "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{CRYPT}$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
        "{CRYPT}$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA",
        "{CRYPT}$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
        "{CRYPT}$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",
        "{PBKDF2-SHA256}10000$MDEyMzQ1Njc4OWFiY2RlZg$6umsHhz0yhb.YIJ/FUgCrsOB.tK.gGdB.tvI2KPIHns",
        "{PBKDF2-SHA512}10000$MDEyMzQ1Njc4OWFiY2RlZg$vmRQw0BpocKqrhRKR3m3G/IeOsJdowFFKr1BqQJRowa7rT6Pmm2h2hOQOkeCI6snZ9iO2b2vBKBYyAogx9T2vA",
        "{PBKDF2}10000$MDEyMzQ1Njc4OWFiY2RlZg$QVljdW66hKXEevyu3tfWz0W/tzo",
        "secret",
    ];

    #[test]
    fn every_scheme_accepts_the_right_password_only() {
        for v in VECTORS {
            assert!(verify(v, "secret"), "{v} refused the right password");
            assert!(!verify(v, "Secret"), "{v} accepted a wrong password");
            assert!(!verify(v, ""), "{v} accepted an empty password");
        }
    }

    #[test]
    fn md5_crypt_matches_openssl() {
        assert_eq!(
            md5_crypt(b"secret", b"saltsalt"),
            "$1$saltsalt$9xy1btjgzLYfb7hivXtC//"
        );
    }

    #[test]
    fn new_hashes_are_argon2_and_verify() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("{ARGON2}$argon2id$"), "{h}");
        assert!(verify(&h, "correct horse battery"));
        assert!(!verify(&h, "correct horse"));
        assert!(!is_weak(&h));
        assert!(is_weak("{SSHA}lHFzXul4wnzRItssVcTnvXWRjNgBAgMEBQYHCA=="));
    }

    #[test]
    fn malformed_values_never_match() {
        for bad in [
            "{SSHA}",
            "{SSHA}!!!",
            "{CRYPT}$1$",
            "{PBKDF2-SHA256}0$a$b",
            "{PBKDF2-SHA256}x",
            "{ARGON2}nonsense",
            "{UNKNOWN}secret",
            "{SSHA}AAAA",
        ] {
            assert!(!verify(bad, "secret"), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(stored in "\\PC{0,80}", given in "\\PC{0,20}") {
            let _ = verify(&stored, &given);
        }
    }
}
