//! The TLS client configuration: verified certificates and host names, always.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Amazon RDS root CAs, for direct connections to RDS and Aurora (see the file's header).
const RDS_CA_BUNDLE: &[u8] = include_bytes!("../certs/rds-ca-bundle.pem");

/// CAs to trust besides the built-in roots: `DB_CA_FILE` (a PEM file in the function's file
/// system) and `DB_CA_PEM` (the PEM text itself, for where no file can be shipped, e.g.
/// `sam local invoke`, which mounts only the build artifact). Either, both or neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtraCas {
    pub file: Option<PathBuf>,
    pub pem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("DB_CA_FILE `{path}` cannot be read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} holds no usable PEM certificate: {reason}")]
    NoCertificate { origin: String, reason: String },
    #[error("the built-in RDS CA bundle is unusable: {0}")]
    Builtin(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Trusts the Mozilla roots (RDS Proxy's ACM certificates chain to Amazon Root CA 1-4), the
/// Amazon RDS CAs, and the certificates in `extra` (`DB_CA_FILE`, `DB_CA_PEM`), and nothing else.
pub fn client_config(extra: &ExtraCas) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let builtin = parse_pem(RDS_CA_BUNDLE).map_err(TlsError::Builtin)?;
    let (_, ignored) = roots.add_parsable_certificates(builtin);
    if ignored > 0 {
        return Err(TlsError::Builtin(format!(
            "{ignored} certificates did not parse"
        )));
    }
    let mut sources = Vec::new();
    if let Some(path) = &extra.file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
        sources.push((format!("DB_CA_FILE `{shown}`"), pem));
    }
    if let Some(pem) = &extra.pem {
        sources.push(("DB_CA_PEM".to_owned(), pem.as_bytes().to_vec()));
    }
    for (origin, pem) in sources {
        let no_certificate = |reason: String| TlsError::NoCertificate {
            origin: origin.clone(),
            reason,
        };
        for certificate in parse_pem(&pem).map_err(no_certificate)? {
            roots
                .add(certificate)
                .map_err(|error| no_certificate(error.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())?;
    if certificates.is_empty() {
        return Err("no `BEGIN CERTIFICATE` block found".to_owned());
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roots_load() {
        let config = client_config(&ExtraCas::default()).unwrap();
        drop(config);
        let rds = parse_pem(RDS_CA_BUNDLE).unwrap();
        assert!(
            rds.len() > 50,
            "expected the RDS regional roots, got {}",
            rds.len()
        );
    }

    fn file(path: &std::path::Path) -> ExtraCas {
        ExtraCas {
            file: Some(path.to_path_buf()),
            pem: None,
        }
    }

    fn pem(text: &str) -> ExtraCas {
        ExtraCas {
            file: None,
            pem: Some(text.to_owned()),
        }
    }

    #[test]
    fn unreadable_or_empty_ca_files_are_clear_errors() {
        let error = client_config(&file(std::path::Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error}");
        assert!(error.to_string().contains("DB_CA_FILE"));

        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        let error = client_config(&file(&empty)).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        assert!(error.to_string().starts_with("DB_CA_FILE"), "{error}");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, GARBAGE).unwrap();
        let error = client_config(&file(&garbage)).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const GARBAGE: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    #[test]
    fn unusable_ca_pem_text_is_a_clear_error() {
        for text in ["just text", GARBAGE] {
            let error = client_config(&pem(text)).unwrap_err();
            assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
            assert!(
                error.to_string().starts_with("DB_CA_PEM holds no"),
                "{error}"
            );
        }
        // One of the built-in RDS roots is a well-formed CA, so it is accepted as PEM text.
        let text = std::str::from_utf8(RDS_CA_BUNDLE).unwrap();
        client_config(&pem(text)).unwrap();
    }
}
