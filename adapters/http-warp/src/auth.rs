//! Authentication: named bearer tokens with a scope, compared in constant
//! time.
//!
//! Off by default, as in the original (the build network's firewall was its
//! only protection). `/gettac` always stays open: machines boot without
//! secrets. A token's scope says what it may do:
//!
//! | scope | may |
//! | --- | --- |
//! | `admin` | every write (see [`slavealloc_domain::access`]) and see passwords |
//! | `operator` | the day-to-day writes: enable, disable, lock, notes, moves, drains |
//! | `secrets` | only see passwords in `/api/gettac` and the UI's tac preview |
//! | `master` | only read worker lists, `GET /api/masters/<name>/workers`: a Buildbot master's token |
//!
//! Worker lists hold every password of a pool, so only `admin` and
//! `master` tokens read them; a `master` token does nothing else (it
//! writes nothing and sees no password in previews), so the token a
//! master's configuration holds gives no more than the passwords that
//! master already knows.

use std::net::IpAddr;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use slavealloc_domain::{Permission, Writer};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every write, and passwords in previews.
    Admin,
    /// The day-to-day writes.
    Operator,
    /// Reading passwords in previews; no writes.
    Secrets,
    /// Reading worker lists (a Buildbot master's token); nothing else.
    Master,
}

impl Scope {
    /// Its name in configuration and messages.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Operator => "operator",
            Scope::Secrets => "secrets",
            Scope::Master => "master",
        }
    }
}

/// A configured token: its name, a digest of its secret, its scope.
#[derive(Clone)]
struct Token {
    name: String,
    digest: [u8; 32],
    scope: Scope,
}

/// The configured tokens by name. Empty: writes need no token.
///
/// Its `Debug` shows the names and scopes only; the secrets are never
/// printed or logged.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Token>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|t| (&t.name, t.scope.name())))
            .finish()
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

/// Who a request is, for the audit log and for what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Tokens are off: writes are open (but not the code), the actor is
    /// the client's address.
    Open(String),
    /// A valid token: its name and scope.
    Token(String, Scope),
    /// Tokens are on and the request has none that is valid.
    Anonymous,
}

impl Identity {
    /// The writer this identity is, or `None` when it may not write at
    /// all (no valid token; a `secrets` or `master` token).
    pub fn writer(&self) -> Option<Writer> {
        let (name, permission) = match self {
            Identity::Open(client) => (client, Permission::Open),
            Identity::Token(name, Scope::Admin) => (name, Permission::Admin),
            Identity::Token(name, Scope::Operator) => (name, Permission::Operator),
            Identity::Token(_, Scope::Secrets | Scope::Master) | Identity::Anonymous => return None,
        };
        Some(Writer {
            name: name.clone(),
            permission,
        })
    }

    /// Whether it may see passwords in previews.
    pub fn sees_secrets(&self) -> bool {
        matches!(self, Identity::Token(_, Scope::Admin | Scope::Secrets))
    }

    /// Whether it may read worker lists, which hold every password of a
    /// pool: admin and master tokens only, never without tokens.
    pub fn reads_worker_lists(&self) -> bool {
        matches!(self, Identity::Token(_, Scope::Admin | Scope::Master))
    }

    /// The name to log.
    pub fn name(&self) -> &str {
        match self {
            Identity::Open(client) => client,
            Identity::Token(name, _) => name,
            Identity::Anonymous => "anonymous",
        }
    }
}

impl Tokens {
    /// Admin tokens from `(name, secret)` pairs.
    ///
    /// # Errors
    /// As for [`Tokens::with_scopes`].
    pub fn new<I, N, S>(pairs: I) -> Result<Self, TokenError>
    where
        I: IntoIterator<Item = (N, S)>,
        N: Into<String>,
        S: Into<String>,
    {
        Self::with_scopes(pairs.into_iter().map(|(n, s)| (n, s, Scope::Admin)))
    }

    /// Tokens from `(name, secret, scope)`.
    ///
    /// # Errors
    /// An empty name, a secret shorter than [`MIN_TOKEN_LEN`] or holding
    /// whitespace, or a secret given twice (which would make the audit
    /// log's actor ambiguous). The message names the token, never its
    /// secret.
    pub fn with_scopes<I, N, S>(tokens: I) -> Result<Self, TokenError>
    where
        I: IntoIterator<Item = (N, S, Scope)>,
        N: Into<String>,
        S: Into<String>,
    {
        let mut kept: Vec<Token> = Vec::new();
        for (name, secret, scope) in tokens {
            let (name, secret) = (name.into(), secret.into());
            if name.trim().is_empty() {
                return Err(TokenError("a token has an empty name".to_owned()));
            }
            // Its audit entries would read as allocations (`kind=allocation`).
            if name == slavealloc_domain::audit::ALLOCATION_ACTOR {
                return Err(TokenError(format!(
                    "no token may be named {name:?}: the audit log's allocations are written under that name"
                )));
            }
            if secret.len() < MIN_TOKEN_LEN || secret.chars().any(char::is_whitespace) {
                return Err(TokenError(format!(
                    "token {name:?} must be at least {MIN_TOKEN_LEN} characters without spaces"
                )));
            }
            let digest = digest(secret.as_bytes());
            if kept.iter().any(|t| t.digest == digest) {
                return Err(TokenError(format!(
                    "token {name:?} has the same secret as another token"
                )));
            }
            kept.push(Token { name, digest, scope });
        }
        Ok(Self(kept))
    }

    /// Whether writes need a token.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// The token `presented` is, if any. Digests of the same length are
    /// compared, every configured token each time and each in constant
    /// time, so the time taken tells neither how much of a guess was right
    /// nor how long a token is.
    fn identify(&self, presented: &[u8]) -> Option<&Token> {
        let presented = digest(presented);
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.digest.ct_eq(&presented)) {
                found = Some(token);
            }
        }
        found
    }

    /// Who is asking: the token's name and scope when tokens are
    /// configured ([`Identity::Anonymous`] without a valid one), else the
    /// client's address.
    pub fn identity(&self, authorization: Option<&str>, client: Option<IpAddr>) -> Identity {
        if !self.required() {
            return Identity::Open(client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()));
        }
        authorization
            .and_then(bearer)
            .and_then(|presented| self.identify(presented.as_bytes()))
            .map_or(Identity::Anonymous, |t| Identity::Token(t.name.clone(), t.scope))
    }

    /// Who is writing: the token's name when tokens are configured (`None`
    /// when the request has no valid write token), else the client's
    /// address.
    pub fn actor(&self, authorization: Option<&str>, client: Option<IpAddr>) -> Option<String> {
        self.identity(authorization, client).writer().map(|w| w.name)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
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
    fn scopes_decide_what_a_token_may_do() {
        let t = Tokens::with_scopes([
            ("admin", "0123456789abcdef", Scope::Admin),
            ("buildduty", "fedcba9876543210", Scope::Operator),
            ("viewer", "aaaaaaaaaaaaaaaa", Scope::Secrets),
            ("bm01", "bbbbbbbbbbbbbbbb", Scope::Master),
        ])
        .unwrap();
        let who = |secret: &str| t.identity(Some(&format!("Bearer {secret}")), None);
        assert_eq!(who("0123456789abcdef").writer().unwrap().permission, Permission::Admin);
        assert_eq!(
            who("fedcba9876543210").writer().unwrap().permission,
            Permission::Operator
        );
        assert_eq!(who("aaaaaaaaaaaaaaaa").writer(), None, "a secrets token cannot write");
        assert!(who("0123456789abcdef").sees_secrets() && who("aaaaaaaaaaaaaaaa").sees_secrets());
        assert!(!who("fedcba9876543210").sees_secrets());
        // A master token reads worker lists and does nothing else.
        let master = who("bbbbbbbbbbbbbbbb");
        assert_eq!(master, Identity::Token("bm01".into(), Scope::Master));
        assert_eq!(master.writer(), None, "a master token cannot write");
        assert!(!master.sees_secrets(), "a master token sees no password in previews");
        assert!(master.reads_worker_lists() && who("0123456789abcdef").reads_worker_lists());
        for other in ["fedcba9876543210", "aaaaaaaaaaaaaaaa", "nope-nope-nope-nope"] {
            assert!(!who(other).reads_worker_lists(), "{other}");
        }
        assert_eq!(who("nope-nope-nope-nope"), Identity::Anonymous);
        let open = Tokens::default().identity(None, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(open.writer().unwrap().permission, Permission::Open);
        assert!(!open.sees_secrets());
        assert!(!open.reads_worker_lists(), "without tokens nobody reads worker lists");
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
