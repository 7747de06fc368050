//! A throwaway certificate authority and a server certificate signed by it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer};
use rcgen::{KeyPair, KeyUsagePurpose};

use crate::process::write_service_file;

/// PEM files of a fresh CA (`ca.pem`: what clients trust, `sslrootcert`, `DB_CA_FILE`) and of a
/// server certificate it signed (`server.crt`, key `server.key`, mode 0600), in `dir`.
///
/// The server certificate is an end-entity certificate (`CA:FALSE`, `serverAuth`): rustls rejects
/// a CA certificate used as a server certificate (`CaUsedAsEndEntity`), and it ignores the subject
/// CN. Every call makes a new, unrelated CA: generate twice to get an "untrusted" pair.
#[derive(Clone, Debug)]
pub struct Certs {
    pub ca_pem: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Certs {
    /// The names the stack's server certificate is for: what the function and psql connect to.
    pub const LOCALHOST: &[&str] = &["localhost", "127.0.0.1"];

    /// A CA plus a server certificate for `names` (the subject alternative names; one that parses
    /// as an IP address becomes an IP SAN), in `dir`. The stack's is for [`Certs::LOCALHOST`].
    pub fn generate(dir: &Path, names: &[&str]) -> Result<Certs> {
        let build = || -> Result<[String; 3], rcgen::Error> {
            let ca_key = KeyPair::generate()?;
            let mut ca = CertificateParams::new(Vec::<String>::new())?;
            ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            ca.distinguished_name
                .push(DnType::CommonName, "local-stack test CA");
            ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let ca_cert = ca.self_signed(&ca_key)?;
            let issuer = Issuer::new(ca, ca_key);

            let key = KeyPair::generate()?;
            let mut server =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
            server.is_ca = IsCa::ExplicitNoCa;
            let cn = names.first().copied().unwrap_or("server");
            server.distinguished_name.push(DnType::CommonName, cn);
            server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            server.use_authority_key_identifier_extension = true;
            let cert = server.signed_by(&key, &issuer)?;
            Ok([ca_cert.pem(), cert.pem(), key.serialize_pem()])
        };
        let pems = build().context("generate test certificates")?;
        let certs = Certs {
            ca_pem: dir.join("ca.pem"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        };
        for (path, pem) in [&certs.ca_pem, &certs.server_cert, &certs.server_key]
            .iter()
            .zip(pems)
        {
            write_service_file(path, pem.as_bytes())?;
        }
        Ok(certs)
    }
}
