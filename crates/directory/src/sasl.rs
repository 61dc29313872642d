//! The SASL mechanisms the protocol servers offer for passwords (PLAIN,
//! RFC 4616; LOGIN, the draft every mail client still speaks): decoding
//! the client's base64 responses into an authorization identity, a login
//! and a password. Pure; the servers check the result with
//! [`crate::Directory::authenticate`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Longest base64 response accepted.
pub const MAX_RESPONSE: usize = 4096;

/// What PLAIN carries.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The identity to act as; empty means the login itself.
    pub authzid: String,
    pub login: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("authzid", &self.authzid)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("the response is not valid base64")]
    Base64,
    #[error("the response is too long")]
    TooLong,
    #[error("the response is malformed")]
    Malformed,
    /// The client sent `*`.
    #[error("authentication cancelled")]
    Cancelled,
}

/// Decodes one base64 response (`=` is the empty response).
pub fn decode(response: &str) -> Result<Vec<u8>, SaslError> {
    let r = response.trim();
    if r == "*" {
        return Err(SaslError::Cancelled);
    }
    if r.len() > MAX_RESPONSE {
        return Err(SaslError::TooLong);
    }
    if r == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(r).map_err(|_| SaslError::Base64)
}

pub fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// PLAIN: `authzid NUL login NUL password`, UTF-8.
pub fn plain(response: &str) -> Result<Credentials, SaslError> {
    let raw = decode(response)?;
    let text = String::from_utf8(raw).map_err(|_| SaslError::Malformed)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(login), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if login.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        authzid: authzid.to_string(),
        login: login.to_string(),
        password: password.to_string(),
    })
}

/// One LOGIN step: the user name or the password, as text.
pub fn login_step(response: &str) -> Result<String, SaslError> {
    let raw = decode(response)?;
    let text = String::from_utf8(raw).map_err(|_| SaslError::Malformed)?;
    if text.is_empty() || text.contains('\0') {
        return Err(SaslError::Malformed);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_responses() {
        let c = plain("AGJvYgBzZWNyZXQ=").unwrap();
        assert_eq!((c.authzid.as_str(), c.login.as_str()), ("", "bob"));
        assert_eq!(c.password, "secret");
        assert_eq!(plain(&encode(b"bob\0secret")), Err(SaslError::Malformed));
        assert_eq!(plain("%%%"), Err(SaslError::Base64));
        assert_eq!(plain("*"), Err(SaslError::Cancelled));
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(login_step(&encode(b"bob")).unwrap(), "bob");
        assert_eq!(login_step("="), Err(SaslError::Malformed));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(s in ".{0,300}") {
            let _ = plain(&s);
            let _ = login_step(&s);
        }
    }
}
