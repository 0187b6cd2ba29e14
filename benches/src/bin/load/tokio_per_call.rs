//! The baseline design as a [`System`]: a tokio task, a socket and a timer per call, each
//! driving a `ringcast_core::Call` (the same str0m `Rtc` and DTLS config as ringcast's).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringcast::{CallState, SharedSource};
use ringcast_core::Datagram;
use ringcast_core::call::{Call, CallConfig, Command as CallCommand, Input, Output};
use ringcast_core::crypto::{CallCrypto, CryptoOptions, generate_certificate};
use ringcast_core::pacer::LatenessHistogram;
use ringcast_core::signaling::group::JoinResponse;

use crate::sfu::Sfu;
use crate::system::{CHATS, Sample, System, chat_tones};

/// The obvious design: a tokio task, a socket and an `Rtc` per call, a timer per call.
pub(crate) struct TokioPerCall {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Mutex<HashMap<usize, (u64, LatenessHistogram)>>>,
    connected: Arc<AtomicU64>,
    crypto: Arc<ringcast_core::str0m::crypto::CryptoProvider>,
    /// The same shared tones as ringcast: the comparison isolates the I/O and timer design,
    /// not encoding (an encoder per call would only widen the gap).
    tones: Vec<SharedSource>,
    calls: usize,
}

impl TokioPerCall {
    pub(crate) fn new(threads: usize) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        // Same str0m, same shared DTLS config: only the I/O design differs.
        let crypto = CallCrypto::new(CryptoOptions::default())
            .map_err(|e| e.to_string())?
            .provider();
        let tones = chat_tones()?;
        Ok(Self {
            runtime,
            shared: Arc::new(Mutex::new(HashMap::new())),
            connected: Arc::new(AtomicU64::new(0)),
            crypto,
            tones,
            calls: 0,
        })
    }
}

async fn tokio_call(
    index: usize,
    mut call: Call,
    response: JoinResponse,
    source: SharedSource,
    shared: Arc<Mutex<HashMap<usize, (u64, LatenessHistogram)>>>,
    connected: Arc<AtomicU64>,
) {
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return;
    };
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let now = Instant::now();
    if call.connect(now, &response, local).is_err() {
        return;
    }
    let _ = call.handle_input(
        now,
        Input::Command(CallCommand::SetSource(Box::new(source.reader()))),
    );
    let mut buf = vec![0u8; 2048];
    let mut was_connected = false;
    let mut next_report = Instant::now() + Duration::from_millis(500);
    loop {
        let deadline = loop {
            match call.poll_output() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(_) => {}
                _ => {}
            }
        };
        if !was_connected && *call.state() == CallState::Connected {
            was_connected = true;
            connected.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(call.state(), CallState::Ended(_)) {
            return;
        }
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = r {
                    let input = Input::Datagram(Datagram::new(source, local, &buf[..n]));
                    let _ = call.handle_input(Instant::now(), input);
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let _ = call.handle_input(Instant::now(), Input::Timeout);
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_millis(500);
            let s = call.stats();
            if let Ok(mut m) = shared.lock() {
                m.insert(index, (s.packets_sent, s.lateness.clone()));
            }
        }
    }
}

impl System for TokioPerCall {
    fn name(&self) -> &'static str {
        "tokio_per_call"
    }

    fn grow_to(&mut self, n: usize, sfu: &Sfu) -> Result<(), String> {
        while self.calls < n {
            let chat = self.calls % CHATS;
            let cert = generate_certificate().ok_or("certificate")?;
            let mut config = CallConfig::new(0xB45E_0000 + self.calls as u64, cert);
            config.crypto = Some(self.crypto.clone());
            let call = Call::new(Instant::now(), config).map_err(|e| e.to_string())?;
            let answer = sfu.join(chat, &call.join_payload().to_json())?;
            let response = JoinResponse::parse(answer.as_bytes()).map_err(|e| e.to_string())?;
            self.runtime.spawn(tokio_call(
                self.calls,
                call,
                response,
                self.tones[chat].clone(),
                self.shared.clone(),
                self.connected.clone(),
            ));
            self.calls += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while (self.connected.load(Ordering::Relaxed) as usize) < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "{}/{n} connected after 60 s",
                    self.connected.load(Ordering::Relaxed)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn sample(&self) -> Sample {
        let connected = self.connected.load(Ordering::Relaxed) as usize;
        match self.shared.lock() {
            Ok(m) => Sample::sum(connected, m.values().map(|(p, l)| (*p, l))),
            Err(_) => Sample::sum(connected, []),
        }
    }
}
