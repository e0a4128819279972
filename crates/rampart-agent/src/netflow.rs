//! NetFlow v5/v9 and IPFIX over UDP: one socket, one decoder and one thread
//! per `--netflow-listen` address.
//!
//! The thread blocks in `recv_from` (with a short timeout to notice a stop),
//! decodes each datagram with the source address as the exporter (so
//! templates are kept per exporter), and hands flows to the pipeline in
//! chunks of up to [`CHUNK_RECORDS`] or every [`CHUNK_MAX_AGE`]. It never
//! waits for the pipeline: when its queue is full, the chunk is dropped and
//! counted per exporter, since blocking would only move the loss into the
//! kernel's socket buffer, where nobody counts it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_flow::{Decoder, FlowRecord};
use socket2::{Domain, Protocol, Socket, Type};

use crate::pipeline::{now_ms, Chunk, ExporterStatus, FlowStats, Origin};

/// Flows per chunk sent to the pipeline.
pub const CHUNK_RECORDS: usize = 2048;
/// Oldest a chunk gets before it is sent anyway.
pub const CHUNK_MAX_AGE: Duration = Duration::from_millis(100);
/// How often decoder templates are expired and counters published.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Receive buffer asked of the kernel: bursts of exporters are absorbed
/// here while the thread decodes (Linux caps it at `net.core.rmem_max`).
pub const DEFAULT_RCVBUF: usize = 32 * 1024 * 1024;

/// Binds a UDP socket for exporters to send to, with a large receive buffer.
pub fn bind(addr: SocketAddr, rcvbuf: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4 exporters too on `[::]:port`, where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(rcvbuf) {
        tracing::warn!(%addr, error = %e, "cannot enlarge the receive buffer");
    }
    socket.bind(&addr.into())?;
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < rcvbuf / 2 {
        tracing::warn!(%addr, asked = rcvbuf, got, "receive buffer is smaller than asked: raise net.core.rmem_max so bursts are not dropped by the kernel");
    }
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(socket.into())
}

/// Receives and decodes until `stop` is set.
pub(crate) fn run(
    socket: UdpSocket,
    tx: SyncSender<Chunk>,
    stop: Arc<AtomicBool>,
    stats: Arc<FlowStats>,
) {
    let local = socket.local_addr().ok();
    let mut decoder = Decoder::default();
    // 65,535 is the largest UDP payload; one more byte tells a truncated
    // read (impossible for UDP over IPv4/IPv6 without jumbograms).
    let mut buf = vec![0u8; 65_536];
    let mut records: Vec<FlowRecord> = Vec::with_capacity(CHUNK_RECORDS);
    let mut chunk_started = Instant::now();
    let mut deltas: HashMap<IpAddr, ExporterStatus> = HashMap::new();
    let mut last_housekeeping = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let exporter = peer.ip().to_canonical();
                let d = deltas.entry(exporter).or_default();
                d.datagrams += 1;
                if records.is_empty() {
                    chunk_started = Instant::now();
                }
                let datagram = buf.get(..n).unwrap_or(&[]);
                if n >= buf.len() {
                    d.errors += 1;
                } else {
                    match decoder.decode(exporter, datagram, now_ms(), &mut records) {
                        Ok(s) => {
                            d.errors += (s.malformed_sets + s.templates_refused) as u64;
                            d.missing_templates += s.missing_template_sets as u64;
                        }
                        Err(e) => {
                            d.errors += 1;
                            tracing::debug!(%exporter, error = %e, "datagram refused");
                        }
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::warn!(listen = ?local, error = %e, "receiving flows failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if records.len() >= CHUNK_RECORDS
            || (!records.is_empty() && chunk_started.elapsed() >= CHUNK_MAX_AGE)
        {
            send(&tx, &mut records, &mut deltas);
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = Instant::now();
            decoder.expire(now_ms());
            publish(&stats, &mut deltas);
        }
    }
    send(&tx, &mut records, &mut deltas);
    publish(&stats, &mut deltas);
}

fn send(
    tx: &SyncSender<Chunk>,
    records: &mut Vec<FlowRecord>,
    deltas: &mut HashMap<IpAddr, ExporterStatus>,
) {
    if records.is_empty() {
        return;
    }
    let chunk = Chunk {
        file: None,
        received_ms: now_ms(),
        records: std::mem::replace(records, Vec::with_capacity(CHUNK_RECORDS)),
        alerts: Vec::new(),
        checkpoint: None,
    };
    match tx.try_send(chunk) {
        Ok(()) => {}
        Err(TrySendError::Full(chunk)) | Err(TrySendError::Disconnected(chunk)) => {
            for r in &chunk.records {
                deltas.entry(r.exporter).or_default().dropped += 1;
            }
            tracing::debug!(
                flows = chunk.records.len(),
                "flow pipeline is behind: chunk dropped"
            );
        }
    }
}

fn publish(stats: &FlowStats, deltas: &mut HashMap<IpAddr, ExporterStatus>) {
    if deltas.is_empty() {
        return;
    }
    stats.merge(deltas.drain().map(|(a, d)| (Origin::Exporter(a), d)));
}
