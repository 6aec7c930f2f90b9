//! Signed `buildbot.tac` files.
//!
//! Every build machine runs, at boot, the Python file the allocator hands
//! it; whoever can pose as the allocator runs code on the fleet. With a
//! signing key the daemon signs each tac, and `runslave --pubkey` runs only a
//! tac signed by that key *for its own slave name*.
//!
//! Main design decision: **the signature travels inside the tac**, as its
//! last line, a Python comment. The cached copy on the machine therefore
//! stays verifiable offline (runslave checks it again before every use), and
//! a tac is one file whatever carries it (HTTP, a cache, a copy by hand).
//! The daemon also sends the same line's value as the `X-Slavealloc-Signature`
//! header of `/gettac`, for tools that look at headers.
//!
//! # Format (version 1)
//!
//! A signed tac is the renderer's text (the *body*, which always ends with a
//! newline: one is added when it does not) followed by exactly one line:
//!
//! ```text
//! # slavealloc-signature: v1 slave=<name> generated=<unix seconds> ed25519=<base64>\n
//! ```
//!
//! - `<name>` is the slave name the tac was made for (lower case, as the
//!   allocator's names are; no white space or control characters);
//! - `<unix seconds>` is when it was generated (the time in the tac's
//!   `# generated:` header), in decimal without leading zeros;
//! - `<base64>` is the standard, padded base64 of the 64-byte ed25519
//!   signature (RFC 8032, ed25519-dalek) of the message
//!
//! ```text
//! slavealloc-tac-signature-v1\n
//! slave=<name>\n
//! generated=<unix seconds>\n
//! <body>
//! ```
//!
//! so the name and the time are bound to the body, and a signature made for
//! anything else (another format, another slave) never verifies here.
//!
//! A verifier takes the last line of the file (the file must end with a
//! newline), parses it, re-renders it from the parsed values and refuses it
//! unless the two are byte for byte equal: no second spelling of a line
//! (upper-case letters, leading zeros, non-canonical base64, extra spaces)
//! is accepted, so changing any byte of a signed tac makes it fail.
//!
//! Keys are ordinary PEM files: the private key PKCS#8
//! (`-----BEGIN PRIVATE KEY-----`), the public key SPKI
//! (`-----BEGIN PUBLIC KEY-----`), the same as
//! `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

#[cfg(feature = "renderer")]
mod renderer;
#[cfg(feature = "renderer")]
pub use renderer::SigningRenderer;

/// What starts the signature line.
pub const LINE_PREFIX: &str = "# slavealloc-signature: ";
/// The version this crate writes and reads.
pub const VERSION: &str = "v1";
/// The HTTP response header (`X-Slavealloc-Signature`, lower case as HTTP/2
/// and the `http` crate write it) of `/gettac` that repeats the signature line's
/// value (the line without [`LINE_PREFIX`] and the newline).
pub const HEADER: &str = "x-slavealloc-signature";
/// What the signed message starts with: keeps these signatures from ever
/// being valid for anything else signed by the same key.
const CONTEXT: &str = "slavealloc-tac-signature-v1\n";

/// Why a key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not a PEM key of the expected kind.
    #[error("{0}")]
    Invalid(String),
}

/// Why a tac could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The slave name could not be written in the signature line.
    #[error("cannot sign a tac for {0:?}: a slave name has no white space or control characters")]
    BadName(String),
    /// The generation time is before 1970.
    #[error("cannot sign a tac generated before 1970")]
    BadTime,
}

/// Why a tac is not accepted; each says what a machine's operator needs to
/// know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// There is no signature line at the end.
    #[error("the tac is not signed (its last line is not a slavealloc signature)")]
    Unsigned,
    /// The last line looks like a signature line but is not a valid one.
    #[error("the tac's signature line is malformed: {0}")]
    Malformed(String),
    /// A signature for another slave.
    #[error("the tac is signed for slave {found:?}, not {expected:?}")]
    OtherSlave {
        /// The name in the signature line.
        found: String,
        /// The name asked for.
        expected: String,
    },
    /// The signature does not match the text, or another key made it.
    #[error("the tac's signature does not verify: it was altered or signed by another key")]
    BadSignature,
}

/// A verified tac's signature facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The slave it was signed for.
    pub slave: String,
    /// When it was generated, in seconds since 1970.
    pub generated: u64,
}

/// Makes a new key pair: `(private key PEM, public key PEM)`, from the
/// operating system's random source.
///
/// # Errors
/// [`KeyError::Invalid`] when the random source fails or a key cannot be
/// encoded.
#[cfg(feature = "keygen")]
pub fn generate_key_pair() -> Result<(String, String), KeyError> {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use rand::RngCore as _;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| KeyError::Invalid(format!("no random bytes from the system: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Invalid(format!("cannot encode the private key: {e}")))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Invalid(format!("cannot encode the public key: {e}")))?;
    Ok((private.to_string(), public))
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Signs tacs with a private key.
pub struct TacSigner {
    key: SigningKey,
}

impl std::fmt::Debug for TacSigner {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TacSigner").finish_non_exhaustive()
    }
}

impl TacSigner {
    /// Reads a PKCS#8 PEM private key.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] when it is not an ed25519 private key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(|key| Self { key })
            .map_err(|e| KeyError::Invalid(format!("not an ed25519 private key in PKCS#8 PEM: {e}")))
    }

    /// Reads a PKCS#8 PEM private key file.
    ///
    /// # Errors
    /// [`KeyError::Read`] or, naming the file, [`KeyError::Invalid`].
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read(path)?).map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
    }

    /// The verifier of this key's signatures.
    pub fn verifier(&self) -> TacVerifier {
        TacVerifier {
            key: self.key.verifying_key(),
        }
    }

    /// `tac` with its signature line appended (and a newline before it when
    /// `tac` does not end with one), binding `slave` and `generated`.
    ///
    /// # Errors
    /// [`SignError::BadName`] for a name that cannot be written in the line,
    /// [`SignError::BadTime`] for a time before 1970.
    pub fn sign(&self, tac: &str, slave: &str, generated: SystemTime) -> Result<String, SignError> {
        if slave.is_empty() || slave.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SignError::BadName(slave.to_owned()));
        }
        let generated = generated
            .duration_since(UNIX_EPOCH)
            .map_err(|_| SignError::BadTime)?
            .as_secs();
        let mut out = String::with_capacity(tac.len() + 160);
        out.push_str(tac);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        let signature = self.key.sign(&message(slave, generated, &out));
        out.push_str(&line(slave, generated, &signature));
        Ok(out)
    }
}

/// Verifies tacs with a public key.
#[derive(Debug, Clone)]
pub struct TacVerifier {
    key: VerifyingKey,
}

impl TacVerifier {
    /// Reads an SPKI PEM public key.
    ///
    /// # Errors
    /// [`KeyError::Invalid`] when it is not an ed25519 public key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        VerifyingKey::from_public_key_pem(pem)
            .map(|key| Self { key })
            .map_err(|e| KeyError::Invalid(format!("not an ed25519 public key in PEM: {e}")))
    }

    /// Reads an SPKI PEM public key file.
    ///
    /// # Errors
    /// [`KeyError::Read`] or, naming the file, [`KeyError::Invalid`].
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read(path)?).map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Checks that `tac` ends with a signature line made by this key for
    /// `slave`, over everything before it.
    ///
    /// # Errors
    /// [`VerifyError::Unsigned`] without a signature line,
    /// [`VerifyError::Malformed`] for one that is not canonical,
    /// [`VerifyError::OtherSlave`] for another slave's, and
    /// [`VerifyError::BadSignature`] when the body or the line was changed
    /// or another key signed it.
    pub fn verify(&self, tac: &str, slave: &str) -> Result<Verified, VerifyError> {
        let (body, value) = split(tac).ok_or(VerifyError::Unsigned)?;
        let (found, generated, signature) = parse(value)?;
        if found != slave {
            return Err(VerifyError::OtherSlave {
                found: found.to_owned(),
                expected: slave.to_owned(),
            });
        }
        self.key
            .verify(&message(found, generated, body), &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        Ok(Verified {
            slave: found.to_owned(),
            generated,
        })
    }
}

/// The value of a tac's signature line (what follows [`LINE_PREFIX`], without
/// the newline), if its last line is one; not verified. This is what the
/// daemon sends as the [`HEADER`].
pub fn signature_value(tac: &str) -> Option<&str> {
    split(tac).map(|(_, value)| value)
}

/// `(body, value of the signature line)` when the last line of `tac` is a
/// signature line.
fn split(tac: &str) -> Option<(&str, &str)> {
    let without_newline = tac.strip_suffix('\n')?;
    let start = without_newline.rfind('\n').map_or(0, |i| i + 1);
    let value = without_newline[start..].strip_prefix(LINE_PREFIX)?;
    Some((&tac[..start], value))
}

fn parse(value: &str) -> Result<(&str, u64, Signature), VerifyError> {
    let malformed = |why: &str| VerifyError::Malformed(why.to_owned());
    let mut fields = value.split(' ');
    if fields.next() != Some(VERSION) {
        return Err(malformed("not a version 1 signature"));
    }
    let mut field = |key: &str| {
        fields
            .next()
            .and_then(|f| f.strip_prefix(key))
            .ok_or_else(|| VerifyError::Malformed(format!("no {key}")))
    };
    let slave = field("slave=")?;
    let generated: u64 = field("generated=")?
        .parse()
        .map_err(|_| malformed("generated= is not a number of seconds"))?;
    let bytes = STANDARD
        .decode(field("ed25519=")?)
        .map_err(|_| malformed("ed25519= is not base64"))?;
    let signature = Signature::from_slice(&bytes).map_err(|_| malformed("ed25519= is not 64 bytes"))?;
    // One spelling only: anything else a byte change could make (case,
    // leading zeros, base64 padding bits, spacing, more fields) is refused.
    if line(slave, generated, &signature) != format!("{LINE_PREFIX}{value}\n") {
        return Err(malformed("not in canonical form"));
    }
    Ok((slave, generated, signature))
}

fn line(slave: &str, generated: u64, signature: &Signature) -> String {
    format!(
        "{LINE_PREFIX}{VERSION} slave={slave} generated={generated} ed25519={}\n",
        STANDARD.encode(signature.to_bytes())
    )
}

fn message(slave: &str, generated: u64, body: &str) -> Vec<u8> {
    format!("{CONTEXT}slave={slave}\ngenerated={generated}\n{body}").into_bytes()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TAC: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: Thu Jan  1 00:00:00 1970 on alloc\n\nslavename = 'linux-01'\n";

    fn keys() -> (TacSigner, TacVerifier) {
        let (private, _) = generate_key_pair().unwrap();
        let signer = TacSigner::from_pem(&private).unwrap();
        let verifier = signer.verifier();
        (signer, verifier)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_signed_tac_verifies_and_keeps_its_body() {
        let (signer, verifier) = keys();
        let signed = signer.sign(TAC, "linux-01", at(1_700_000_000)).unwrap();
        assert!(signed.starts_with(TAC));
        let last = signed.lines().last().unwrap();
        assert!(last.starts_with("# slavealloc-signature: v1 slave=linux-01 generated=1700000000 ed25519="));
        assert_eq!(
            verifier.verify(&signed, "linux-01"),
            Ok(Verified {
                slave: "linux-01".into(),
                generated: 1_700_000_000
            })
        );
        assert_eq!(signature_value(&signed), last.strip_prefix(LINE_PREFIX));
        // A body without a final newline gets one before the line.
        let signed = signer.sign("print(1)", "linux-01", at(5)).unwrap();
        assert!(signed.starts_with("print(1)\n# slavealloc-signature: "), "{signed}");
        assert!(verifier.verify(&signed, "linux-01").is_ok());
    }

    #[test]
    fn one_byte_changed_anywhere_is_refused() {
        let (signer, verifier) = keys();
        let signed = signer.sign(TAC, "linux-01", at(1_700_000_000)).unwrap();
        let bytes = signed.as_bytes();
        for i in 0..bytes.len() {
            // Two kinds of change: a low bit (digits, letters, base64) and
            // case (0x20: what a lenient parser would ignore).
            for flip in [0x01u8, 0x20] {
                let mut changed = bytes.to_vec();
                changed[i] ^= flip;
                let Ok(text) = String::from_utf8(changed) else { continue };
                assert!(
                    verifier.verify(&text, "linux-01").is_err(),
                    "byte {i} ^ {flip:#x} still verifies: {text:?}"
                );
            }
        }
        // Appended or removed text, too.
        assert_eq!(
            verifier.verify(&format!("{signed}print('x')\n"), "linux-01"),
            Err(VerifyError::Unsigned)
        );
        assert!(verifier.verify(&signed[..signed.len() - 1], "linux-01").is_err());
        assert!(verifier.verify(&format!("import os\n{signed}"), "linux-01").is_err());
    }

    #[test]
    fn another_slaves_tac_is_refused() {
        let (signer, verifier) = keys();
        let signed = signer.sign(TAC, "linux-02", at(1)).unwrap();
        assert_eq!(
            verifier.verify(&signed, "linux-01"),
            Err(VerifyError::OtherSlave {
                found: "linux-02".into(),
                expected: "linux-01".into()
            })
        );
        // Rewriting the name in the line breaks the signature.
        let renamed = signed.replace("slave=linux-02", "slave=linux-01");
        assert_eq!(verifier.verify(&renamed, "linux-01"), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_missing_line_is_unsigned() {
        let (_, verifier) = keys();
        assert_eq!(verifier.verify(TAC, "linux-01"), Err(VerifyError::Unsigned));
        assert_eq!(verifier.verify("", "linux-01"), Err(VerifyError::Unsigned));
        assert_eq!(verifier.verify("\n", "linux-01"), Err(VerifyError::Unsigned));
        assert_eq!(signature_value(TAC), None);
        let bad = format!("{TAC}{LINE_PREFIX}v2 slave=linux-01\n");
        assert!(matches!(
            verifier.verify(&bad, "linux-01"),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn another_keys_signature_is_refused() {
        let (signer, _) = keys();
        let (_, other) = keys();
        let signed = signer.sign(TAC, "linux-01", at(1)).unwrap();
        assert_eq!(other.verify(&signed, "linux-01"), Err(VerifyError::BadSignature));
    }

    #[test]
    fn names_that_cannot_be_written_are_refused() {
        let (signer, _) = keys();
        for name in ["", "a b", "a\nb", "a\tb"] {
            assert_eq!(signer.sign(TAC, name, at(1)), Err(SignError::BadName(name.into())));
        }
    }

    #[test]
    fn keys_round_trip_through_pem_files() {
        let (private, public) = generate_key_pair().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"), "{private}");
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), &private).unwrap();
        std::fs::write(dir.path().join("k.pub"), &public).unwrap();
        let signer = TacSigner::from_pem_file(&dir.path().join("k")).unwrap();
        let verifier = TacVerifier::from_pem_file(&dir.path().join("k.pub")).unwrap();
        let signed = signer.sign(TAC, "linux-01", at(1)).unwrap();
        assert!(verifier.verify(&signed, "linux-01").is_ok());
        // The wrong kind of key, and a missing file, say so.
        assert!(TacVerifier::from_pem(&private).is_err());
        assert!(TacSigner::from_pem(&public).is_err());
        let err = TacVerifier::from_pem_file(&dir.path().join("none")).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
        assert!(!format!("{signer:?}").contains("PRIVATE"));
    }
}
