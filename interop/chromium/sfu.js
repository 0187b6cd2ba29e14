// Chromium (libwebrtc) as the SFU of a ringcast group call, driven by
// engine-runtime/tests/chromium_interop.rs over HTTP on loopback:
//   GET  /params  -> {send_hz, record_ms, video, video_samples}: what to do (send_hz 0:
//                    receive only; video: also receive ringcast's camera track, decode it,
//                    draw it on a canvas and sample the pixels at video_samples [[x, y], ...])
//   POST /offer   <- our offer SDP after ICE gathering; the response body is the answer SDP
//                    the test built from ringcast's join payload (a=setup:passive for ringcast,
//                    so we are the DTLS client; we offer, so we are ICE controlling)
//   POST /result  <- {dominant_hz, bin_hz, peak_db, packets_received, ..., video: {...}} or {error}
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

async function inboundVideo(pc) {
  const stats = await pc.getStats();
  let inbound = null;
  stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") inbound = s; });
  const codec = inbound && inbound.codecId ? stats.get(inbound.codecId) : null;
  return { inbound, codec };
}

// ringcast's camera track: played (muted) in a <video>, decoded by libwebrtc; waits for 30
// decoded frames, counts again two seconds later, then draws the picture on a canvas and reads
// the pixels at `samples` (each the mean of a 5x5 square).
async function measureVideo(pc, track, samples) {
  log("remote track", track.kind, track.readyState);
  const el = document.getElementById("video");
  el.srcObject = new MediaStream([track]);
  el.play().catch((e) => log("video element play:", e));
  const deadline = Date.now() + 15000;
  let { inbound } = await inboundVideo(pc);
  while (!inbound || !(inbound.framesDecoded >= 30) || el.videoWidth === 0) {
    if (Date.now() > deadline) {
      return { error: "no video decoded", inbound, element_width: el.videoWidth, ready_state: el.readyState };
    }
    await sleep(100);
    ({ inbound } = await inboundVideo(pc));
  }
  const first = inbound.framesDecoded;
  await sleep(2000);
  // A frame presented after the wait: the canvas gets the current picture.
  if (el.requestVideoFrameCallback) {
    await Promise.race([new Promise((r) => el.requestVideoFrameCallback(() => r())), sleep(2000)]);
  }
  const canvas = document.getElementById("canvas");
  canvas.width = el.videoWidth;
  canvas.height = el.videoHeight;
  const g = canvas.getContext("2d", { willReadFrequently: true });
  g.drawImage(el, 0, 0, canvas.width, canvas.height);
  const pixels = samples.map(([x, y]) => {
    const d = g.getImageData(x - 2, y - 2, 5, 5).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) for (let c = 0; c < 3; c++) sum[c] += d[i + c];
    return sum.map((v) => Math.round(v / (d.length / 4)));
  });
  const { inbound: last, codec } = await inboundVideo(pc);
  return {
    ssrc: last.ssrc,
    mime_type: codec ? codec.mimeType : null,
    sdp_fmtp_line: codec ? codec.sdpFmtpLine : null,
    payload_type: codec ? codec.payloadType : null,
    decoder_implementation: last.decoderImplementation,
    frames_decoded_first: first,
    frames_decoded: last.framesDecoded,
    key_frames_decoded: last.keyFramesDecoded,
    frames_received: last.framesReceived,
    frames_dropped: last.framesDropped,
    frame_width: last.frameWidth,
    frame_height: last.frameHeight,
    frames_per_second: last.framesPerSecond,
    element_width: el.videoWidth,
    element_height: el.videoHeight,
    packets_received: last.packetsReceived,
    packets_lost: last.packetsLost,
    bytes_received: last.bytesReceived,
    nack_count: last.nackCount,
    pli_count: last.pliCount,
    fir_count: last.firCount,
    pixels,
  };
}

async function run() {
  const params = JSON.parse(await (await fetch("/params")).text());
  const ctx = new AudioContext({ sampleRate: 48000 });
  await ctx.resume();
  // max-bundle: one transport for audio and video, as ringcast has one for everything.
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
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
  if (params.video) pc.addTransceiver("video", { direction: "recvonly" });
  let gotAudio, gotVideo;
  const track = new Promise((resolve) => { gotAudio = resolve; });
  const videoTrack = new Promise((resolve) => { gotVideo = resolve; });
  pc.ontrack = (e) => (e.track.kind === "video" ? gotVideo : gotAudio)(e.track);

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
  const video = params.video ? await measureVideo(pc, await videoTrack, params.video_samples) : null;
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
    video,
  };
  await post("/result", result);
  pc.close();
}

run().catch((e) => post("/result", { error: String(e && e.stack || e) }));
