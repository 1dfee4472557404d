//! One registry's TLS client configuration: the system's roots, the CA
//! files given, and `certs.d/HOST[:PORT]/*.crt`; or, for a registry the
//! user marked insecure, no verification at all (docker's meaning of
//! `--insecure-registry`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::transport::{read_pem_certs, TransportOptions};
use crate::error::{Error, Result};

pub fn client_config(
    registry: &str,
    opts: &TransportOptions,
    verify: bool,
) -> Result<Arc<rustls::ClientConfig>> {
    // ring, not aws-lc-rs: no C library and cmake in every build for a
    // client that only pulls; rustls deprecates it for lacking
    // post-quantum key exchange, which registries do not require.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(format!("TLS setup: {e}")))?;
    let config = if verify {
        builder
            .with_root_certificates(roots(registry, opts)?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

fn roots(registry: &str, opts: &TransportOptions) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped, as every TLS client
    // does; the registry's own CA comes from the files below anyway.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    let mut files: Vec<PathBuf> = opts.ca_files.clone();
    for dir in &opts.certs_dirs {
        let host_dir = dir.join(registry);
        let Ok(entries) = std::fs::read_dir(&host_dir) else {
            continue;
        };
        let mut crts: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        crts.sort();
        files.extend(crts);
    }
    for f in files {
        for cert in read_pem_certs(&f)? {
            roots
                .add(cert)
                .map_err(|e| Error::Invalid(format!("CA file {}: {e}", f.display())))?;
        }
    }
    Ok(roots)
}

/// Accepts any certificate, still checking the handshake's signatures
/// (so the connection is encrypted, only not authenticated): what the
/// user asked for by marking the registry insecure.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
