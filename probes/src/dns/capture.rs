//! Counting how often DNS query names arrive at servers, from packets captured on the node's
//! interfaces (AF_PACKET through pnet). Needs CAP_NET_RAW; read-only; bounded in time.

use super::packet::{parse_frame, DnsPacket, LinkType};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Why capture is not possible.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// No permission (not root / no CAP_NET_RAW).
    #[error("packet capture needs CAP_NET_RAW (run as root): {0}")]
    Permission(String),
    /// No interface could be opened.
    #[error("failed to open any interface for capture: {0}")]
    NoInterface(String),
}

/// Whether this process may capture (opens and closes one channel on a loopback interface).
pub fn available() -> Result<(), CaptureError> {
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.is_loopback() && i.is_up())
        .ok_or_else(|| CaptureError::NoInterface("no loopback interface is up".into()))?;
    match pnet_datalink::channel(&iface, pnet_datalink::Config::default()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(CaptureError::Permission(format!("{}: {e}", iface.name)))
        }
        Err(e) => Err(CaptureError::NoInterface(format!("{}: {e}", iface.name))),
    }
}

type Seen = HashMap<String, HashMap<SocketAddr, HashSet<(SocketAddr, u16)>>>;

/// A running capture of DNS queries for a set of names.
pub struct Capture {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    seen: Arc<Mutex<Seen>>,
    interfaces: Vec<String>,
}

impl Capture {
    /// Starts capturing on every interface that is up, keeping only queries to `port` whose
    /// first question is one of `names` (lowercase, fully qualified).
    pub fn start(port: u16, names: &[String]) -> Result<Capture, CaptureError> {
        let wanted: Arc<HashSet<String>> =
            Arc::new(names.iter().map(|n| n.to_ascii_lowercase()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let mut threads = Vec::new();
        let mut interfaces = Vec::new();
        let mut last_err = String::from("no interface is up");
        let mut permission = false;
        for iface in pnet_datalink::interfaces()
            .into_iter()
            .filter(|i| i.is_up())
        {
            let config = pnet_datalink::Config {
                read_timeout: Some(Duration::from_millis(20)),
                ..Default::default()
            };
            let rx = match pnet_datalink::channel(&iface, config) {
                Ok(pnet_datalink::Channel::Ethernet(_tx, rx)) => rx,
                Ok(_) => continue,
                Err(e) => {
                    permission |= e.kind() == std::io::ErrorKind::PermissionDenied;
                    last_err = format!("{}: {e}", iface.name);
                    continue;
                }
            };
            let link = if iface.mac.is_none() && !iface.is_loopback() {
                LinkType::RawIp
            } else {
                LinkType::Ethernet
            };
            interfaces.push(iface.name.clone());
            let (stop, seen, wanted) = (stop.clone(), seen.clone(), wanted.clone());
            threads.push(std::thread::spawn(move || {
                let mut rx = rx;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(frame) = rx.next() else { continue };
                    if let Some(p) = parse_frame(frame, link) {
                        record(&seen, &wanted, port, p);
                    }
                }
            }));
        }
        if threads.is_empty() {
            return Err(if permission {
                CaptureError::Permission(last_err)
            } else {
                CaptureError::NoInterface(last_err)
            });
        }
        Ok(Capture {
            stop,
            threads,
            seen,
            interfaces,
        })
    }

    /// The interfaces being captured.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Stops capturing and returns, per name, the most arrivals at any one destination
    /// (distinct sender and message ID; a packet seen twice on one interface counts once).
    pub fn finish(mut self) -> HashMap<String, u32> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .map(|(name, per_dst)| {
                let max = per_dst.values().map(|s| s.len() as u32).max().unwrap_or(0);
                (name.clone(), max)
            })
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn record(seen: &Mutex<Seen>, wanted: &HashSet<String>, port: u16, p: DnsPacket) {
    if p.response || p.dst.port() != port || !wanted.contains(&p.qname) {
        return;
    }
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    s.entry(p.qname)
        .or_default()
        .entry(p.dst)
        .or_default()
        .insert((p.src, p.id));
}
