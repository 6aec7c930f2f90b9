//! The signing decorator: a [`TacRenderer`] around the real one, so that
//! every path that renders a tac (`/gettac`, `/api/gettac`, the UI preview,
//! an embedder) hands out a signed one.

use std::sync::Arc;

use slavealloc_domain::ports::{TacBody, TacRequest};
use slavealloc_domain::{RenderError, TacRenderer};

use crate::TacSigner;

/// Renders with the inner renderer, then appends the signature line for the
/// request's slave and generation time.
pub struct SigningRenderer {
    inner: Arc<dyn TacRenderer>,
    signer: TacSigner,
}

impl std::fmt::Debug for SigningRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningRenderer").finish_non_exhaustive()
    }
}

impl SigningRenderer {
    /// Signs what `inner` renders with `signer`.
    pub fn new(inner: Arc<dyn TacRenderer>, signer: TacSigner) -> Self {
        Self { inner, signer }
    }
}

impl TacRenderer for SigningRenderer {
    fn render(&self, request: &TacRequest) -> Result<String, RenderError> {
        let tac = self.inner.render(request)?;
        let slave = match &request.body {
            TacBody::Disabled { slavename } => slavename,
            TacBody::Enabled { values, .. } => &values.slavename,
        };
        self.signer
            .sign(&tac, slave, request.header.generated)
            .map_err(|e| RenderError::Invalid {
                template: "(signature)".to_owned(),
                message: e.to_string(),
            })
    }

    fn check_template(&self, text: &str) -> Result<(), RenderError> {
        self.inner.check_template(text)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use slavealloc_domain::ports::{TacHeader, TacValues};

    use super::*;

    struct Plain;

    impl TacRenderer for Plain {
        fn render(&self, request: &TacRequest) -> Result<String, RenderError> {
            Ok(format!(
                "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n{:?}\n",
                request.body
            ))
        }
        fn check_template(&self, text: &str) -> Result<(), RenderError> {
            Err(RenderError::Invalid {
                template: "t".into(),
                message: text.into(),
            })
        }
    }

    fn request(body: TacBody) -> TacRequest {
        TacRequest {
            header: TacHeader {
                generated: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                host: "alloc".into(),
            },
            body,
        }
    }

    #[test]
    fn enabled_and_disabled_tacs_are_signed_for_their_slave() {
        let (private, _) = crate::generate_key_pair().unwrap();
        let signer = TacSigner::from_pem(&private).unwrap();
        let verifier = signer.verifier();
        let renderer = SigningRenderer::new(Arc::new(Plain), signer);
        let enabled = request(TacBody::Enabled {
            template: None,
            values: TacValues {
                buildmaster_host: "m".into(),
                port: 9010,
                slavename: "linux-01".into(),
                basedir: "/b".into(),
                passwd: "pw".into(),
            },
        });
        let tac = renderer.render(&enabled).unwrap();
        assert_eq!(verifier.verify(&tac, "linux-01").unwrap().generated, 1_700_000_000);
        let disabled = request(TacBody::Disabled {
            slavename: "linux-02".into(),
        });
        let tac = renderer.render(&disabled).unwrap();
        assert!(verifier.verify(&tac, "linux-02").is_ok());
        // Template checks are the inner renderer's.
        assert!(renderer.check_template("x").is_err());
    }
}
