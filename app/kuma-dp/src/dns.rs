//! kuma-dp's embedded DNS proxy (Kuma's `dnsproxy`): answers the mesh's hostnames with their
//! VIPs from the records the control plane serves at `/dns` on Envoy's dynamic configuration
//! listener, and forwards every other question to the host's resolver (the first `nameserver`
//! of `/etc/resolv.conf`). With a transparent proxy, the host's DNS traffic is redirected here.
//!
//! Records are read again every `refresh` (Kuma's
//! `dataplaneRuntime.dynamicConfiguration.refreshInterval`); an unchanged set costs a 304 from
//! the local Envoy. The answer path reads a shared table and never waits on the refresh.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use model::dpapi::{DNS_PATH, DnsProxyConfig};
use tokio::net::UdpSocket;

use crate::dynconf::{Fetched, fetch};

/// The largest record set read from Envoy.
const MAX_RECORDS: usize = 16 << 20;
/// How long the host's resolver may take before the client is told SERVFAIL.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest DNS message over UDP with EDNS.
const MAX_MESSAGE: usize = 4096;
/// Questions forwarded to the host's resolver at once; beyond, a question is dropped (its
/// client asks again) rather than opening sockets without bound.
const MAX_FORWARDS: usize = 512;

/// The names kuma-dp answers itself: lowercase, without the root's dot.
#[derive(Debug, Default)]
pub struct Table {
    ttl: u32,
    by_name: HashMap<String, Vec<IpAddr>>,
}

impl Table {
    pub fn from_config(config: DnsProxyConfig) -> Table {
        let mut by_name: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for record in config.records {
            let ips = by_name.entry(normalize(&record.name)).or_default();
            for ip in &record.ips {
                match ip.parse() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => tracing::warn!(
                        ip,
                        name = record.name,
                        "DNS record with an invalid IP left out"
                    ),
                }
            }
        }
        Table {
            ttl: config.ttl,
            by_name,
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

pub type SharedTable = Arc<RwLock<Arc<Table>>>;

/// What to do with one query.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Answered here.
    Local(Vec<u8>),
    /// Not a name of the mesh: the host's resolver answers.
    Forward,
    /// Not a DNS query at all: dropped, as a resolver would.
    Drop,
}

/// Kuma's answer: A and AAAA questions for a name of the table get its addresses of that
/// family (none is still an answer: NOERROR without records); anything else is forwarded.
pub fn answer(query: &[u8], table: &Table) -> Reply {
    let Ok(request) = Message::from_vec(query) else {
        return Reply::Drop;
    };
    if request.message_type() != MessageType::Query {
        return Reply::Drop;
    }
    let Some(question) = request.queries().first() else {
        return Reply::Forward;
    };
    let qtype = question.query_type();
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        return Reply::Forward;
    }
    let Some(ips) = table.by_name.get(&normalize(&question.name().to_ascii())) else {
        return Reply::Forward;
    };
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(question.clone());
    for ip in ips {
        let rdata = match (qtype, ip) {
            (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
            (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        response.add_answer(Record::from_rdata(
            question.name().clone(),
            table.ttl,
            rdata,
        ));
    }
    match response.to_vec() {
        Ok(bytes) => Reply::Local(bytes),
        Err(e) => {
            tracing::warn!(error = %e, "encoding a DNS answer failed");
            Reply::Forward
        }
    }
}

/// The first `nameserver` of a resolv.conf, on port 53.
pub fn upstream_from(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// Binds the proxy on `address` and starts answering and following the records.
pub async fn start(
    address: SocketAddr,
    config_socket: PathBuf,
    refresh: Duration,
) -> Result<tokio::task::JoinHandle<()>> {
    let socket = UdpSocket::bind(address)
        .await
        .with_context(|| format!("binding the DNS proxy on {address}"))?;
    let upstream = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|c| upstream_from(&c));
    if upstream.is_none() {
        tracing::warn!("no nameserver in /etc/resolv.conf: names outside the mesh get SERVFAIL");
    }
    tracing::info!(%address, ?upstream, "DNS proxy listening");
    let table: SharedTable = Arc::default();
    let followed = table.clone();
    Ok(tokio::spawn(async move {
        tokio::join!(
            serve(Arc::new(socket), table, upstream),
            follow(config_socket, followed, refresh)
        );
    }))
}

/// Keeps `table` as the control plane's latest records.
async fn follow(config_socket: PathBuf, table: SharedTable, refresh: Duration) {
    let mut etag: Option<String> = None;
    let mut failing = false;
    loop {
        match fetch(&config_socket, DNS_PATH, etag.as_deref(), MAX_RECORDS).await {
            Ok(Fetched::Unchanged) => {}
            Ok(Fetched::Changed { etag: tag, body }) => {
                match serde_json::from_slice::<DnsProxyConfig>(&body) {
                    Ok(config) => {
                        let next = Table::from_config(config);
                        tracing::debug!(records = next.len(), "DNS records updated");
                        *table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
                        etag = Some(tag);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the control plane's DNS records do not parse; keeping the previous ones")
                    }
                }
            }
            Ok(Fetched::Missing) => {
                if etag.take().is_some() {
                    *table.write().unwrap_or_else(|p| p.into_inner()) = Arc::default();
                }
            }
            // Envoy has not opened the listener yet, or is restarting: quiet until it works.
            Err(e) => {
                if !failing {
                    tracing::debug!(error = %format!("{e:#}"), "DNS records not readable yet");
                }
                failing = true;
                tokio::time::sleep(refresh).await;
                continue;
            }
        }
        failing = false;
        tokio::time::sleep(refresh).await;
    }
}

async fn serve(socket: Arc<UdpSocket>, table: SharedTable, upstream: Option<SocketAddr>) {
    let forwards = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "DNS proxy receive failed");
                continue;
            }
        };
        let current = table.read().unwrap_or_else(|p| p.into_inner()).clone();
        match answer(&buf[..n], &current) {
            Reply::Local(bytes) => {
                if let Err(e) = socket.send_to(&bytes, client).await {
                    tracing::debug!(error = %e, %client, "DNS answer not sent");
                }
            }
            Reply::Drop => {}
            Reply::Forward => {
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    tracing::debug!(%client, "too many DNS questions in flight upstream; one dropped");
                    continue;
                };
                let query = buf[..n].to_vec();
                let socket = socket.clone();
                tokio::spawn(async move {
                    forward(socket, query, client, upstream).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Asks the host's resolver from a socket of its own, and relays the answer (SERVFAIL if there
/// is none in time).
async fn forward(
    socket: Arc<UdpSocket>,
    query: Vec<u8>,
    client: SocketAddr,
    upstream: Option<SocketAddr>,
) {
    let relayed = async {
        let upstream = upstream.context("no upstream resolver")?;
        let local: SocketAddr = if upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let out = UdpSocket::bind(local).await?;
        out.connect(upstream).await?;
        out.send(&query).await?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, out.recv(&mut buf))
            .await
            .context("the upstream resolver did not answer")??;
        buf.truncate(n);
        anyhow::Ok(buf)
    }
    .await;
    let reply = match relayed {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "forwarding a DNS query failed");
            match Message::from_vec(&query) {
                Ok(request) => {
                    let mut failure = Message::new();
                    failure
                        .set_id(request.id())
                        .set_message_type(MessageType::Response)
                        .set_op_code(request.op_code())
                        .set_recursion_desired(request.recursion_desired())
                        .set_response_code(ResponseCode::ServFail)
                        .add_queries(request.queries().to_vec());
                    match failure.to_vec() {
                        Ok(b) => b,
                        Err(_) => return,
                    }
                }
                Err(_) => return,
            }
        }
    };
    let _ = socket.send_to(&reply, client).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use model::dpapi::DnsRecord;

    fn table() -> Table {
        Table::from_config(DnsProxyConfig {
            records: vec![
                DnsRecord {
                    name: "backend.svc.mesh.local".into(),
                    ips: vec!["241.0.0.1".into()],
                },
                DnsRecord {
                    name: "dual.svc.mesh.local".into(),
                    ips: vec!["241.0.0.2".into(), "fd00::2".into(), "not-an-ip".into()],
                },
            ],
            ttl: 30,
            extra_labels: Default::default(),
        })
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242)
            .set_message_type(MessageType::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn answered(reply: Reply) -> Message {
        match reply {
            Reply::Local(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mesh_names_are_answered_with_their_vips_in_any_case() {
        let t = table();
        let m = answered(answer(&query("Backend.SVC.mesh.local.", RecordType::A), &t));
        assert_eq!(m.id(), 4242);
        assert!(m.authoritative());
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.answers().len(), 1);
        assert_eq!(m.answers()[0].ttl(), 30);
        assert_eq!(
            m.answers()[0].data(),
            &RData::A(A("241.0.0.1".parse().unwrap()))
        );
        let m = answered(answer(&query("dual.svc.mesh.local", RecordType::AAAA), &t));
        assert_eq!(
            m.answers()[0].data(),
            &RData::AAAA(AAAA("fd00::2".parse().unwrap()))
        );
        // A v4-only name asked for AAAA: an empty answer, not a forward that could leak it.
        let m = answered(answer(
            &query("backend.svc.mesh.local", RecordType::AAAA),
            &t,
        ));
        assert!(m.answers().is_empty());
        assert_eq!(m.response_code(), ResponseCode::NoError);
    }

    #[test]
    fn other_names_types_and_garbage() {
        let t = table();
        assert_eq!(
            answer(&query("example.com", RecordType::A), &t),
            Reply::Forward
        );
        assert_eq!(
            answer(&query("backend.svc.mesh.local", RecordType::MX), &t),
            Reply::Forward
        );
        assert_eq!(answer(b"\x00\x01garbage", &t), Reply::Drop);
        assert_eq!(answer(&[], &t), Reply::Drop);
    }

    #[test]
    fn the_first_nameserver_is_the_upstream() {
        let conf = "# generated\nsearch example.com\nnameserver 10.0.0.53\nnameserver 8.8.8.8\n";
        assert_eq!(upstream_from(conf), Some("10.0.0.53:53".parse().unwrap()));
        assert_eq!(
            upstream_from("nameserver fe80::1%eth0\n"),
            Some("[fe80::1]:53".parse().unwrap())
        );
        assert_eq!(upstream_from("options ndots:5\n"), None);
    }
}
