//! `flowgen`: the flow side of the `bench/flows` benchmark.
//!
//! - `flowgen [--pcap FILE | --udp 127.0.0.1:PORT --rate N] --flows N ...`
//!   generates a deterministic, realistic mix of flows from many NetFlow v9
//!   and IPFIX exporters (see `model.rs`, `export.rs`), writes them as a
//!   pcap or sends them over UDP to a collector on loopback, and prints the
//!   ground truth computed from the generator itself: flow, byte and packet
//!   totals and the top 10 sources by bytes. That is the reference both our
//!   portal and nfdump are checked against.
//! - `flowgen decode-bench FILE.pcap` runs `rampart_flow::Decoder` over the
//!   capture's UDP payloads on one thread and reports flows per CPU second.
//!
//! Not a test and not part of the main workspace; nothing here runs in CI.

mod decode_bench;
mod export;
mod model;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

use export::{Exporter, ExporterConfig, Proto};
use model::{Model, ModelConfig};

#[derive(Parser)]
#[command(
    name = "flowgen",
    about = "Flow generator for bench/flows (not a test)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    gen: GenArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Decode a pcap's UDP payloads with rampart_flow::Decoder on one
    /// thread and print flows per CPU second.
    DecodeBench(decode_bench::DecodeBenchArgs),
}

#[derive(Args, Clone)]
struct GenArgs {
    /// Flows to generate.
    #[arg(long, default_value_t = 1_000_000)]
    flows: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Exporters (sites); even ones speak NetFlow v9, odd ones IPFIX.
    #[arg(long, default_value_t = 50)]
    exporters: usize,
    /// Internal hosts, spread over the sites.
    #[arg(long, default_value_t = 5000)]
    hosts: usize,
    /// External (Internet) hosts in the pool.
    #[arg(long, default_value_t = 200_000)]
    external: usize,
    /// Share of flows over IPv6.
    #[arg(long, default_value_t = 0.1)]
    ipv6_share: f64,
    /// Flow times are spread over this many days, ending at --end.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// End of the time window, Unix seconds (default: now, to the minute).
    #[arg(long)]
    end: Option<u64>,
    /// Most flow records per datagram.
    #[arg(long, default_value_t = 30)]
    records_per_datagram: usize,
    /// Largest UDP payload (an Ethernet MTU's worth by default).
    #[arg(long, default_value_t = 1472)]
    max_payload: usize,
    /// Templates are sent in the first and then every Nth datagram.
    #[arg(long, default_value_t = 20)]
    template_every: u64,
    /// Write the datagrams as a pcap (Ethernet/IPv4/UDP, one source
    /// address per exporter).
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Send the datagrams to this loopback address (one source address
    /// 127.1.0.x per exporter).
    #[arg(long)]
    udp: Option<SocketAddr>,
    /// Flows per second when sending over UDP; also sets the pcap's packet
    /// timestamps (a capture of a replay at this rate).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Also write the ground truth to this file.
    #[arg(long)]
    truth: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::DecodeBench(a)) => decode_bench::run(a),
        None => generate(cli.gen),
    }
}

/// Ground truth, accumulated as the flows are generated (memory bounded by
/// the number of distinct sources, i.e. hosts + external pool).
#[derive(Default)]
struct Truth {
    flows: u64,
    bytes: u64,
    packets: u64,
    v6_flows: u64,
    by_src: HashMap<IpAddr, u64>,
    datagrams: u64,
    datagram_bytes: u64,
    first_ms: u64,
    last_ms: u64,
}

impl Truth {
    fn top_src(&self, n: usize) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<_> = self.by_src.iter().map(|(a, b)| (*a, *b)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        writeln!(w, "flows {} flows", self.flows)?;
        writeln!(w, "bytes {} bytes", self.bytes)?;
        writeln!(w, "packets {} packets", self.packets)?;
        writeln!(w, "ipv6_flows {} flows", self.v6_flows)?;
        writeln!(w, "datagrams {} datagrams", self.datagrams)?;
        writeln!(
            w,
            "records_per_datagram {:.1} records",
            self.flows as f64 / self.datagrams.max(1) as f64
        )?;
        writeln!(w, "datagram_bytes {} bytes", self.datagram_bytes)?;
        writeln!(w, "first_start_ms {} ms", self.first_ms)?;
        writeln!(w, "last_end_ms {} ms", self.last_ms)?;
        for (i, (a, b)) in self.top_src(10).iter().enumerate() {
            writeln!(w, "top_src {} {} {}", i + 1, a, b)?;
        }
        Ok(())
    }
}

enum Sink {
    Pcap {
        w: PcapWriter<BufWriter<File>>,
        exporters: Vec<Ipv4Addr>,
        rate: u64,
        start: Duration,
    },
    Udp {
        sockets: Vec<UdpSocket>,
        to: SocketAddr,
        rate: u64,
        started: Instant,
        errors: u64,
    },
    None,
}

/// Source address of exporter `e` in the pcap (TEST-NET-1 and -2: never
/// routed, so a stray replay cannot reach anything).
fn pcap_exporter(e: usize) -> Ipv4Addr {
    if e < 250 {
        Ipv4Addr::new(192, 0, 2, e as u8 + 1)
    } else {
        Ipv4Addr::new(198, 51, (e / 250) as u8, (e % 250) as u8 + 1)
    }
}
const PCAP_COLLECTOR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

impl Sink {
    fn send(
        &mut self,
        e: usize,
        proto: Proto,
        dgram: &[u8],
        flows_done: u64,
    ) -> anyhow::Result<()> {
        match self {
            Sink::Pcap {
                w,
                exporters,
                rate,
                start,
            } => {
                let port = match proto {
                    Proto::V9 => 2055,
                    Proto::Ipfix => 4739,
                };
                let builder = etherparse::PacketBuilder::ethernet2(
                    [0x02, 0, 0, 0, 0, e as u8],
                    [0x02, 0, 0, 0, 0xff, 0xff],
                )
                .ipv4(exporters[e].octets(), PCAP_COLLECTOR.octets(), 64)
                .udp(49152 + e as u16, port);
                let mut frame = Vec::with_capacity(builder.size(dgram.len()));
                builder.write(&mut frame, dgram)?;
                let ts =
                    *start + Duration::from_nanos(flows_done.saturating_mul(1_000_000_000) / *rate);
                w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))?;
            }
            Sink::Udp {
                sockets,
                to,
                rate,
                started,
                errors,
            } => {
                let due = Duration::from_nanos(flows_done.saturating_mul(1_000_000_000) / *rate);
                let now = started.elapsed();
                if due > now + Duration::from_micros(500) {
                    std::thread::sleep(due - now);
                }
                if sockets[e].send_to(dgram, *to).is_err() {
                    *errors += 1;
                }
            }
            Sink::None => {}
        }
        Ok(())
    }
}

fn generate(a: GenArgs) -> anyhow::Result<()> {
    if a.flows == 0 || a.exporters == 0 || a.hosts == 0 || a.external == 0 {
        bail!("--flows, --exporters, --hosts and --external must be positive");
    }
    if a.exporters > 250 * 256 {
        bail!("at most 64000 exporters");
    }
    if a.rate == 0 || a.template_every == 0 || a.records_per_datagram == 0 {
        bail!("--rate, --template-every and --records-per-datagram must be positive");
    }
    // v9 times are ms since boot in 32 bits (49.7 days); boot is up to four
    // days before the window.
    if a.days == 0 || a.days > 44 {
        bail!("--days must be 1..=44 (NetFlow v9 sysUptime is 32-bit milliseconds)");
    }
    if !(0.0..=1.0).contains(&a.ipv6_share) {
        bail!("--ipv6-share must be within 0..1");
    }
    let end_s = match a.end {
        Some(s) => s,
        None => SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() / 60 * 60,
    };
    let end_ms = end_s * 1000;
    let start_ms = end_ms - a.days * 86_400_000;
    let mut model = Model::new(ModelConfig {
        seed: a.seed,
        flows: a.flows,
        exporters: a.exporters,
        hosts: a.hosts,
        external: a.external,
        ipv6_share: a.ipv6_share,
        start_ms,
        end_ms,
    });
    let mut exporters: Vec<Exporter> = (0..a.exporters)
        .map(|e| {
            Exporter::new(ExporterConfig {
                proto: if e.is_multiple_of(2) {
                    Proto::V9
                } else {
                    Proto::Ipfix
                },
                domain: e as u32 + 1,
                boot_ms: model.boot_ms(e),
                max_records: a.records_per_datagram,
                max_payload: a.max_payload,
                template_every: a.template_every,
            })
        })
        .collect();
    let proto_of = |e: usize| {
        if e.is_multiple_of(2) {
            Proto::V9
        } else {
            Proto::Ipfix
        }
    };

    let mut sink = if let Some(p) = &a.pcap {
        if a.udp.is_some() {
            bail!("give --pcap or --udp, not both");
        }
        let f = File::create(p).with_context(|| format!("create {}", p.display()))?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            snaplen: 65535,
            ..PcapHeader::default()
        };
        Sink::Pcap {
            w: PcapWriter::with_header(BufWriter::with_capacity(1 << 20, f), header)?,
            exporters: (0..a.exporters).map(pcap_exporter).collect(),
            rate: a.rate,
            start: Duration::from_secs(end_s),
        }
    } else if let Some(to) = a.udp {
        if !to.ip().is_loopback() {
            bail!("--udp sends only to a loopback address (127.0.0.1 or ::1), not {to}");
        }
        let mut sockets = Vec::with_capacity(a.exporters);
        for e in 0..a.exporters {
            let src: IpAddr = if to.is_ipv4() {
                Ipv4Addr::new(127, 1, (e / 250) as u8, (e % 250) as u8 + 1).into()
            } else {
                to.ip()
            };
            let s = UdpSocket::bind((src, 0)).with_context(|| format!("bind {src}"))?;
            sockets.push(s);
        }
        Sink::Udp {
            sockets,
            to,
            rate: a.rate,
            started: Instant::now(),
            errors: 0,
        }
    } else {
        Sink::None
    };

    let t0 = Instant::now();
    let mut truth = Truth {
        first_ms: u64::MAX,
        ..Truth::default()
    };
    while let Some(f) = model.next_flow() {
        truth.flows += 1;
        truth.bytes += f.bytes;
        truth.packets += f.packets;
        truth.v6_flows += u64::from(f.src.is_ipv6());
        *truth.by_src.entry(f.src).or_default() += f.bytes;
        truth.first_ms = truth.first_ms.min(f.start_ms);
        truth.last_ms = truth.last_ms.max(f.end_ms);
        let e = f.exporter;
        if let Some(d) = exporters[e].push(f) {
            truth.datagrams += 1;
            truth.datagram_bytes += d.len() as u64;
            sink.send(e, proto_of(e), &d, truth.flows)?;
        }
    }
    for (e, x) in exporters.iter_mut().enumerate() {
        if let Some(d) = x.flush() {
            truth.datagrams += 1;
            truth.datagram_bytes += d.len() as u64;
            sink.send(e, proto_of(e), &d, truth.flows)?;
        }
    }
    let wall = t0.elapsed();
    match sink {
        Sink::Pcap { w, .. } => {
            w.into_writer().flush()?;
        }
        Sink::Udp { errors, .. } => {
            println!("udp_send_errors {errors} datagrams");
        }
        Sink::None => {}
    }
    let stdout = std::io::stdout();
    truth.write(&mut stdout.lock())?;
    println!("gen_wall {:.3} s", wall.as_secs_f64());
    if let Some(p) = &a.truth {
        let mut f =
            BufWriter::new(File::create(p).with_context(|| format!("create {}", p.display()))?);
        truth.write(&mut f)?;
        f.flush()?;
    }
    Ok(())
}
