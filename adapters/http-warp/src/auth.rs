//! Write authentication: named bearer tokens, compared in constant time.
//!
//! Off by default, as in the original (the build network's firewall was its
//! only protection). Reads and `/gettac` always stay open: machines boot
//! without secrets.

use std::net::IpAddr;

use subtle::ConstantTimeEq;

/// The configured write tokens by name. Empty: writes need no token.
///
/// Its `Debug` shows the names only; the secrets are never printed or
/// logged.
#[derive(Clone, Default)]
pub struct Tokens(Vec<(String, Vec<u8>)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

/// Why a token configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    /// Tokens from `(name, secret)` pairs.
    ///
    /// # Errors
    /// An empty name, a secret shorter than [`MIN_TOKEN_LEN`] or holding
    /// whitespace, or a secret given twice (which would make the audit
    /// log's actor ambiguous). The message names the token, never its
    /// secret.
    pub fn new<I, N, S>(pairs: I) -> Result<Self, TokenError>
    where
        I: IntoIterator<Item = (N, S)>,
        N: Into<String>,
        S: Into<String>,
    {
        let mut tokens: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, secret) in pairs {
            let (name, secret) = (name.into(), secret.into());
            if name.trim().is_empty() {
                return Err(TokenError("a token has an empty name".to_owned()));
            }
            if secret.len() < MIN_TOKEN_LEN || secret.chars().any(char::is_whitespace) {
                return Err(TokenError(format!(
                    "token {name:?} must be at least {MIN_TOKEN_LEN} characters without spaces"
                )));
            }
            if tokens.iter().any(|(_, s)| s.as_slice() == secret.as_bytes()) {
                return Err(TokenError(format!(
                    "token {name:?} has the same secret as another token"
                )));
            }
            tokens.push((name, secret.into_bytes()));
        }
        Ok(Self(tokens))
    }

    /// Whether writes need a token.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// The name of the token `presented` is, if any. Every configured token
    /// is compared, each in constant time, so the time taken does not tell
    /// how much of a guess was right.
    fn identify(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, secret) in &self.0 {
            if bool::from(secret.as_slice().ct_eq(presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Who is writing: the token's name when tokens are configured (`None`
    /// when the request has no valid one), else the client's address.
    pub fn actor(&self, authorization: Option<&str>, client: Option<IpAddr>) -> Option<String> {
        if !self.required() {
            return Some(client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()));
        }
        let presented = bearer(authorization?)?;
        self.identify(presented.as_bytes()).map(str::to_owned)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case
/// insensitive, as RFC 6750 says).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new([("relops", "0123456789abcdef"), ("ci", "fedcba9876543210")]).unwrap()
    }

    #[test]
    fn a_valid_token_names_the_actor() {
        let t = tokens();
        assert_eq!(t.actor(Some("Bearer fedcba9876543210"), None).as_deref(), Some("ci"));
        assert_eq!(
            t.actor(Some("bearer 0123456789abcdef"), None).as_deref(),
            Some("relops")
        );
    }

    #[test]
    fn anything_else_is_refused_when_tokens_are_configured() {
        let t = tokens();
        for header in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer 0123456789abcde"),
            Some("Bearer 0123456789abcdef0"),
            Some("Basic 0123456789abcdef"),
            Some("0123456789abcdef"),
        ] {
            assert_eq!(t.actor(header, None), None, "{header:?}");
        }
    }

    #[test]
    fn without_tokens_the_actor_is_the_client_address() {
        let peer: IpAddr = "10.2.3.4".parse().unwrap();
        assert_eq!(Tokens::default().actor(None, Some(peer)).as_deref(), Some("10.2.3.4"));
    }

    #[test]
    fn weak_or_ambiguous_configurations_are_refused_without_echoing_secrets() {
        let short = Tokens::new([("a", "short")]).unwrap_err();
        assert!(!short.0.contains("short"), "{short}");
        assert!(Tokens::new([("", "0123456789abcdef")]).is_err());
        assert!(Tokens::new([("a", "0123456789abcdef"), ("b", "0123456789abcdef")]).is_err());
        assert!(Tokens::new([("a", "0123456789 abcdef")]).is_err());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!("{:?}", tokens());
        assert!(
            shown.contains("relops") && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
    }
}
