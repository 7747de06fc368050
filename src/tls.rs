//! The TLS client configuration: verified certificates and host names, always.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Amazon RDS root CAs, for direct connections to RDS and Aurora (see the file's header).
const RDS_CA_BUNDLE: &[u8] = include_bytes!("../certs/rds-ca-bundle.pem");

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("DB_CA_FILE `{path}` cannot be read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("DB_CA_FILE `{path}` holds no usable PEM certificate: {reason}")]
    NoCertificate { path: String, reason: String },
    #[error("the built-in RDS CA bundle is unusable: {0}")]
    Builtin(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Trusts the Mozilla roots (RDS Proxy's ACM certificates chain to Amazon Root CA 1-4), the
/// Amazon RDS CAs, and the certificates in `extra_ca` (`DB_CA_FILE`), and nothing else.
pub fn client_config(extra_ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
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
    if let Some(path) = extra_ca {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
        let no_certificate = |reason: String| TlsError::NoCertificate {
            path: shown.clone(),
            reason,
        };
        let certificates = parse_pem(&pem).map_err(no_certificate)?;
        for certificate in certificates {
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
        let config = client_config(None).unwrap();
        drop(config);
        let rds = parse_pem(RDS_CA_BUNDLE).unwrap();
        assert!(
            rds.len() > 50,
            "expected the RDS regional roots, got {}",
            rds.len()
        );
    }

    #[test]
    fn unreadable_or_empty_ca_files_are_clear_errors() {
        let error = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error}");
        assert!(error.to_string().contains("DB_CA_FILE"));

        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        let error = client_config(Some(&empty)).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = client_config(Some(&garbage)).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
