//! Each replica's mutual TLS: a leaf from the cluster's inter-CP CA, presented by its server
//! and its clients alike.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use security::ca::CertificateAuthority;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{IntercpError, Me};

/// mTLS material for this replica: a fresh leaf from the shared CA.
pub struct Tls {
    pub(crate) ca_pem: String,
    pub(crate) identity: Identity,
}

pub fn issue_tls(ca: &CertificateAuthority, me: &Me) -> Result<Tls, IntercpError> {
    let mut dns = vec!["localhost".to_string(), me.id.clone()];
    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into()];
    match me.address.parse::<IpAddr>() {
        Ok(ip) => ips.push(ip),
        Err(_) => dns.push(me.address.clone()),
    }
    let pair = ca
        .issue(&me.id, &dns, &ips, Duration::from_secs(365 * 86400))
        .map_err(|source| IntercpError::Certificate {
            what: "this replica's inter-CP certificate",
            source,
        })?;
    Ok(Tls {
        ca_pem: ca.cert_pem.clone(),
        identity: Identity::from_pem(pair.cert_pem, pair.key_pem),
    })
}

/// A mutually authenticated channel to another replica; `timeout` bounds each call.
pub(crate) fn channel(
    endpoint: &str,
    host: &str,
    tls: &Tls,
    timeout: Duration,
) -> Result<tonic::transport::Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    let tls_config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(tls.identity.clone())
        .domain_name(host.to_string());
    Ok(Channel::from_shared(endpoint.to_string())?
        .tls_config(tls_config)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout))
}
