// Chromium (libwebrtc) as the SFU of a ringcast group call, driven by
// engine-runtime/tests/chromium_interop.rs over HTTP on loopback:
//   GET  /params  -> {send_hz, record_ms}: what to do (send_hz 0: receive only)
//   POST /offer   <- our offer SDP after ICE gathering; the response body is the answer SDP
//                    the test built from ringcast's join payload (a=setup:passive for ringcast,
//                    so we are the DTLS client; we offer, so we are ICE controlling)
//   POST /result  <- {dominant_hz, bin_hz, peak_db, packets_received, ...} or {error}
//   POST /log     <- progress lines for the test's stderr
"use strict";

async function post(path, body) {
  const r = await fetch(path, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) });
  return r.text();
}
function log(...args) { post("/log", args.join(" ")).catch(() => {}); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function inboundAudio(pc) {
  const stats = await pc.getStats();
  let inbound = null, transport = null, outbound = null, remoteOutbound = null;
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
    if (s.type === "outbound-rtp" && s.kind === "audio") outbound = s;
    if (s.type === "transport") transport = s;
    if (s.type === "remote-outbound-rtp" && s.kind === "audio") remoteOutbound = s;
  });
  return { inbound, transport, outbound, remoteOutbound };
}

async function run() {
  const params = JSON.parse(await (await fetch("/params")).text());
  const ctx = new AudioContext({ sampleRate: 48000 });
  await ctx.resume();
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.onconnectionstatechange = () => log("connection", pc.connectionState);

  if (params.send_hz > 0) {
    // Chromium speaks too: an oscillator through a MediaStreamDestination.
    const osc = new OscillatorNode(ctx, { frequency: params.send_hz });
    const gain = new GainNode(ctx, { gain: 0.5 });
    const dest = ctx.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    pc.addTransceiver(dest.stream.getAudioTracks()[0], { direction: "sendrecv", streams: [dest.stream] });
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" });
  }
  const track = new Promise((resolve) => { pc.ontrack = (e) => resolve(e.track); });

  await pc.setLocalDescription(await pc.createOffer());
  const gathered = new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
  });
  await Promise.race([gathered, sleep(5000)]);
  const answer = await post("/offer", pc.localDescription.sdp);
  await pc.setRemoteDescription({ type: "answer", sdp: answer });

  const remote = await track;
  log("remote track", remote.kind, remote.readyState);
  const stream = new MediaStream([remote]);
  // Chromium feeds remote WebRTC audio into WebAudio only while the stream also plays in a
  // media element; muted is enough.
  const el = document.getElementById("remote");
  el.srcObject = stream;
  el.play().catch((e) => log("audio element play:", e));
  const source = ctx.createMediaStreamSource(stream);
  const analyser = new AnalyserNode(ctx, { fftSize: 8192, smoothingTimeConstant: 0 });
  source.connect(analyser);

  const deadline = Date.now() + 20000;
  while (pc.connectionState !== "connected") {
    if (Date.now() > deadline) throw new Error("not connected: " + pc.connectionState);
    await sleep(100);
  }
  log("connected; AudioContext", ctx.state, ctx.sampleRate);
  await sleep(params.record_ms);

  // Average several spectra (dB -> power) over half a second.
  const bins = new Float32Array(analyser.frequencyBinCount);
  const power = new Float64Array(analyser.frequencyBinCount);
  const snapshots = 10;
  for (let i = 0; i < snapshots; i++) {
    analyser.getFloatFrequencyData(bins);
    for (let k = 0; k < bins.length; k++) {
      if (Number.isFinite(bins[k])) power[k] += Math.pow(10, bins[k] / 10);
    }
    await sleep(50);
  }
  const binHz = ctx.sampleRate / analyser.fftSize;
  let best = 0;
  for (let k = Math.ceil(50 / binHz); k < Math.floor(4000 / binHz); k++) {
    if (power[k] > power[best]) best = k;
  }
  // Parabolic interpolation on log power around the peak bin.
  let offset = 0;
  if (best > 0 && best + 1 < power.length && power[best] > 0) {
    const a = Math.log(power[best - 1] || 1e-30), b = Math.log(power[best]), c = Math.log(power[best + 1] || 1e-30);
    const d = a - 2 * b + c;
    if (d < 0) offset = 0.5 * (a - c) / d;
  }
  const { inbound, transport, outbound, remoteOutbound } = await inboundAudio(pc);
  const result = {
    connection_state: pc.connectionState,
    ice_state: pc.iceConnectionState,
    dtls_state: transport ? transport.dtlsState : null,
    dtls_role: transport ? transport.dtlsRole : null,
    ice_role: transport ? transport.iceRole : null,
    audio_context: ctx.state,
    sample_rate: ctx.sampleRate,
    fft_size: analyser.fftSize,
    bin_hz: binHz,
    peak_bin: best,
    dominant_hz: (best + offset) * binHz,
    peak_db: 10 * Math.log10(power[best] / snapshots || 1e-30),
    packets_received: inbound ? inbound.packetsReceived : 0,
    packets_lost: inbound ? inbound.packetsLost : null,
    inbound_ssrc: inbound ? inbound.ssrc : null,
    codec_id: inbound ? inbound.codecId : null,
    packets_sent: outbound ? outbound.packetsSent : 0,
    // Informational: RTCP sender reports Chromium took from ringcast (remote-outbound-rtp).
    // str0m sends audio SRs every 5 s, so a 3 s recording usually shows 0; with 7 s it is 1.
    sender_reports: remoteOutbound ? remoteOutbound.reportsSent : 0,
    jitter: inbound ? inbound.jitter : null,
    transport_packets_received: transport ? transport.packetsReceived : null,
    transport_packets_sent: transport ? transport.packetsSent : null,
    concealed_samples: inbound ? inbound.concealedSamples : null,
    total_samples_received: inbound ? inbound.totalSamplesReceived : null,
  };
  await post("/result", result);
  pc.close();
}

run().catch((e) => post("/result", { error: String(e && e.stack || e) }));
