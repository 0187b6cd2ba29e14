//! The sfu-mock process the calls connect to: started per ramp, burst or soak on loopback (the
//! ntgcalls baseline: on a veth address, with latency), asked over HTTP for joins and for what
//! it counted.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The sfu-mock process.
pub(crate) struct Sfu {
    child: Child,
    http: String,
}

impl Sfu {
    /// On loopback, without added latency.
    pub(crate) fn start(pin: Option<String>) -> Result<Self, String> {
        Self::start_on(pin, IpAddr::from([127, 0, 0, 1]), 0)
    }

    /// UDP on `udp_ip` (any port), every datagram it sends held back `latency_ms`
    /// (`--latency-ms`; the real ntgcalls misses its own Connected event without it). The HTTP
    /// control API stays on loopback.
    pub(crate) fn start_on(
        pin: Option<String>,
        udp_ip: IpAddr,
        latency_ms: u64,
    ) -> Result<Self, String> {
        Self::spawn(pin, udp_ip, latency_ms, &["--header-only"])
    }

    /// On loopback, decrypting every packet (SRTP, so its rollover at every sequence wrap is
    /// exercised) and counting it from what str0m hands on, without decoding or forwarding:
    /// the soak's SFU. Header-only mode would count from the clear-text header and never see a
    /// packet that fails to decrypt.
    pub(crate) fn start_decrypting(pin: Option<String>) -> Result<Self, String> {
        Self::spawn(
            pin,
            IpAddr::from([127, 0, 0, 1]),
            0,
            &["--no-forward", "--no-analyse"],
        )
    }

    fn spawn(
        pin: Option<String>,
        udp_ip: IpAddr,
        latency_ms: u64,
        mode: &[&str],
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin = exe.with_file_name("sfu-mock");
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it first (cargo build --release -p sfu-mock)",
                bin.display()
            ));
        }
        let mut command = match &pin {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args(mode)
            .args(["--http", "127.0.0.1:0", "--udp"])
            .arg(SocketAddr::new(udp_ip, 0).to_string())
            .args(["--latency-ms", &latency_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting sfu-mock: {e}"))?;
        let stdout = child.stdout.take().ok_or("no sfu-mock stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let v: Value =
            serde_json::from_str(&line).map_err(|e| format!("sfu-mock said {line:?}: {e}"))?;
        let http = v["http"].as_str().ok_or("no http address")?.to_owned();
        Ok(Self { child, http })
    }

    pub(crate) fn join(&self, chat: usize, payload: &str) -> Result<String, String> {
        post_join(&join_agent(), &self.http, chat, payload)
    }

    /// Joins every `(chat, payload)` from [`JOIN_CLIENTS`] threads at once, each with its own
    /// kept-alive connection, as Telegram clients send parallel `phone.joinGroupCall`
    /// requests; the answers come back in the order of `joins`.
    pub(crate) fn join_all(&self, joins: &[(usize, String)]) -> Result<Vec<String>, String> {
        let clients = JOIN_CLIENTS.min(joins.len()).max(1);
        let http = self.http.as_str();
        let mut answers: Vec<Option<String>> = vec![None; joins.len()];
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..clients)
                .map(|k| {
                    s.spawn(move || {
                        let agent = join_agent();
                        joins
                            .iter()
                            .enumerate()
                            .skip(k)
                            .step_by(clients)
                            .map(|(i, (chat, payload))| {
                                post_join(&agent, http, *chat, payload).map(|a| (i, a))
                            })
                            .collect::<Result<Vec<_>, String>>()
                    })
                })
                .collect();
            for t in threads {
                let done = t
                    .join()
                    .map_err(|_| "a join thread panicked".to_owned())??;
                for (i, answer) in done {
                    if let Some(slot) = answers.get_mut(i) {
                        *slot = Some(answer);
                    }
                }
            }
            Ok::<(), String>(())
        })?;
        answers
            .into_iter()
            .map(|a| a.ok_or_else(|| "a join got no answer".to_owned()))
            .collect()
    }

    /// The SFU's whole stats document (for diagnostics).
    pub(crate) fn stats_text(&self) -> Result<String, String> {
        let mut r = ureq::get(&format!("http://{}/v1/stats", self.http))
            .call()
            .map_err(|e| e.to_string())?;
        r.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| e.to_string())
    }

    /// `GET /v1/stats`, parsed.
    pub(crate) fn stats_json(&self) -> Result<Value, String> {
        let mut r = ureq::get(&format!("http://{}/v1/stats", self.http))
            .call()
            .map_err(|e| e.to_string())?;
        let body = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&body).map_err(|e| e.to_string())
    }

    /// (packets, lost) summed over every participant.
    pub(crate) fn totals(&self) -> Result<(u64, u64), String> {
        self.counts().map(|c| (c.packets, c.lost))
    }

    /// Packets and loss summed over every participant, and how many participants' audio
    /// sequence number wrapped at least once (`seq_wraps`), left ones included: one stats
    /// request.
    pub(crate) fn counts(&self) -> Result<Counts, String> {
        let v = self.stats_json()?;
        let mut c = Counts::default();
        let participants = v["chats"]
            .as_object()
            .into_iter()
            .flat_map(|chats| chats.values())
            .flat_map(|list| list.as_array().into_iter().flatten());
        for p in participants {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            c.packets += n("packets");
            c.lost += n("lost");
            c.wrapped += u64::from(n("seq_wraps") > 0);
        }
        Ok(c)
    }
}

/// What [`Sfu::counts`] sums.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) packets: u64,
    pub(crate) lost: u64,
    /// Participants whose audio sequence number wrapped at least once.
    pub(crate) wrapped: u64,
}

/// Threads that send a burst's joins at once ([`Sfu::join_all`]). sfu-mock serves 8 requests
/// at a time; as many clients keep all of them busy.
pub(crate) const JOIN_CLIENTS: usize = 8;

fn join_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn post_join(
    agent: &ureq::Agent,
    http: &str,
    chat: usize,
    payload: &str,
) -> Result<String, String> {
    let url = format!("http://{http}/v1/chats/{chat}/join");
    let mut r = agent.post(&url).send(payload).map_err(|e| e.to_string())?;
    let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    if r.status().as_u16() == 200 {
        Ok(body)
    } else {
        Err(format!("join: HTTP {}: {body}", r.status()))
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
