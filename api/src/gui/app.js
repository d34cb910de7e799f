// The GUI: a page per resource, every one a deep link under /gui, reading only the public API
// (what it shows a script can read too) and following the store's change stream (`/events`)
// instead of polling. Text from the API only ever reaches the page as DOM text, never as HTML.

const base = location.pathname.slice(0, location.pathname.indexOf('/gui'));
const TOKEN_KEY = 'kuma-gui-token';
const SVG = 'http://www.w3.org/2000/svg';

// ---------- DOM ----------

/** An element with attributes (`on*` are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const link = (path, text) => h('a', { href: `${base}/gui${path}` }, text);
const enc = encodeURIComponent;
const state = online => h('span', { class: online ? 'online' : 'offline' }, online ? 'Online' : 'Offline');
const tags = t => Object.entries(t || {}).map(([k, v]) => `${k}=${v}`).join(' ');
const zoneOf = r => r?.labels?.['kuma.io/zone'];
/** The name its owner gave it: a zone's resource on global (and global's on a zone) is stored
 * under a name with a hash of its origin. */
const displayName = r => r?.labels?.['kuma.io/display-name'] || r?.name;

function table(headers, rows, empty = 'None yet.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, headers.map(x => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows.map(r => h('tr', {}, r.map(c => h('td', {}, c)))))));
}

function card(label, value, note) {
  return h('div', { class: 'card' }, h('div', { class: 'muted' }, label), h('div', { class: 'n' }, value),
    note ? h('div', { class: 'muted' }, note) : null);
}

/** Copies `text`; over plain HTTP (no Clipboard API off localhost) through a selection. */
function copyButton(text, label = 'Copy') {
  const done = button => { button.textContent = 'Copied'; setTimeout(() => { button.textContent = label; }, 1500); };
  return h('button', { type: 'button', onclick: e => {
    const button = e.currentTarget;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(() => done(button), err => showError(`Copy failed: ${err.message}`));
      return;
    }
    const area = h('textarea', { readonly: true, class: 'offscreen' }, text);
    document.body.append(area);
    area.select();
    const ok = document.execCommand('copy');
    area.remove();
    if (ok) done(button); else showError('Copy failed: the browser refused it; select the text instead.');
  } }, label);
}

/** "2026-12-07T12:00:00Z (5 minutes ago)". */
function when(ts) {
  if (!ts) return '-';
  const s = Math.round((Date.now() - Date.parse(ts)) / 1000);
  if (Number.isNaN(s)) return ts;
  const a = Math.abs(s);
  const span = a < 90 ? `${a} s` : a < 5400 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} days`;
  return `${ts} (${s >= 0 ? `${span} ago` : `in ${span}`})`;
}

// ---------- YAML ----------

const PLAIN = /^[A-Za-z0-9_./@-][A-Za-z0-9_ ./@:-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|~|[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?|0x[0-9a-fA-F]+|\.inf|\.nan)$/i;

function scalar(v) {
  if (v === null) return 'null';
  if (typeof v !== 'string') return String(v);
  if (v.includes('\n')) return null; // a block scalar, written by the caller
  return PLAIN.test(v) && !RESERVED.test(v) && !v.endsWith(':') && !v.includes(': ') && !v.includes(' #') && v.trim() === v ? v : JSON.stringify(v);
}

/** YAML as `kumactl get -o yaml` writes it: block style, strings quoted only when needed. */
function toYaml(value, indent = '') {
  const entry = (head, v) => {
    if (typeof v === 'string' && v.includes('\n')) {
      return `${head} |${v.endsWith('\n') ? '' : '-'}\n${v.replace(/\n$/, '').split('\n').map(l => `${indent}  ${l}`).join('\n')}`;
    }
    if (v && typeof v === 'object' && Object.keys(v).length) {
      return Array.isArray(v) ? `${head}\n${toYaml(v, indent)}` : `${head}\n${toYaml(v, `${indent}  `)}`;
    }
    const empty = v && typeof v === 'object' ? (Array.isArray(v) ? '[]' : '{}') : scalar(v);
    return `${head} ${empty}`;
  };
  if (Array.isArray(value)) {
    return value.map(item => {
      if (item && typeof item === 'object' && Object.keys(item).length) {
        return `${indent}- ${toYaml(item, `${indent}  `).trimStart()}`;
      }
      return entry(`${indent}-`, item);
    }).join('\n');
  }
  if (value && typeof value === 'object') {
    return Object.entries(value).map(([k, v]) => entry(`${indent}${scalar(k) ?? JSON.stringify(k)}:`, v)).join('\n');
  }
  return `${indent}${scalar(value) ?? JSON.stringify(value)}`;
}

function yamlBlock(value) {
  const text = `${toYaml(value)}\n`;
  return h('div', { class: 'yaml' }, copyButton(text, 'Copy YAML'), h('pre', {}, text));
}

// ---------- API ----------

class ApiError extends Error {}

async function api(path, { text = false } = {}) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(base + path, { headers });
  if (r.status === 401) { showLogin(); throw new ApiError(`${path}: authentication required`); }
  if (!r.ok) {
    // Kuma's error shape: {title, detail, invalid_parameters}.
    let message = `${r.status} ${r.statusText}`;
    try {
      const e = await r.json();
      message = [e.title, e.detail].filter(Boolean).join(': ') || message;
      for (const p of e.invalid_parameters || []) message += ` (${p.field}: ${p.reason})`;
    } catch (_) { /* not JSON */ }
    throw new ApiError(`${path}: ${message}`);
  }
  return text ? r.text() : r.json();
}

/** `api`, or `fallback` when the call fails (a part of a page that may not exist here). */
const maybe = (path, fallback = null) => api(path).catch(() => fallback);

function showError(message) {
  const box = document.getElementById('error');
  box.textContent = message;
  box.hidden = !message;
}

function showLogin() {
  const app = document.getElementById('app');
  const refused = sessionStorage.getItem(TOKEN_KEY) !== null;
  if (app.querySelector('#token') && !refused) return; // already asking (several calls got 401)
  sessionStorage.removeItem(TOKEN_KEY);
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', 'aria-label': 'User token' });
  app.replaceChildren(h('h1', {}, 'Sign in'),
    h('p', { class: 'bad', role: 'alert', hidden: !refused }, 'The control plane refused that token (it is wrong, expired or revoked).'),
    h('p', {}, 'This control plane needs a user token (kumactl generate user-token, the admin token, or a personal access token of a hosted control plane).'),
    h('form', { onsubmit: e => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      restartFollow();
      render();
    } }, input, ' ', h('button', { type: 'submit' }, 'Sign in')));
  input.focus();
}

/** A button that loads one of a proxy's inspect views (config dump, stats, clusters) below it. */
/** What the reader loaded on demand on the page shown (an Envoy configuration, its stats), by
 * API path: a live update redraws the page, and what was loaded, or arrives while it redraws,
 * must stay in view. */
const loaded = { page: null, texts: new Map() };
function loadedOnThisPage() {
  if (loaded.page !== location.pathname) {
    loaded.page = location.pathname;
    loaded.texts.clear();
  }
  return loaded.texts;
}

function inspectButton(label, path) {
  const fill = (out, text) => out.replaceChildren(copyButton(text), h('pre', {}, text));
  const out = h('div');
  const known = loadedOnThisPage().get(path);
  if (known !== undefined) fill(out, known);
  const button = h('button', { type: 'button', onclick: async () => {
    const page = location.pathname;
    try {
      const text = await api(path, { text: true });
      if (location.pathname !== page) return;
      loadedOnThisPage().set(path, text);
      // The page may have been redrawn while this loaded: fill the block in view now.
      const shownNow = [...document.querySelectorAll('.inspect')].find(i => i.dataset.path === path);
      fill(shownNow ? shownNow.lastChild : out, text);
    } catch (e) { showError(e.message); }
  } }, label);
  return h('div', { class: 'inspect', 'data-path': path }, button, out);
}

// ---------- pages ----------

let info = null;
let kinds = null;

/** Every resource type by name: its path and whether it is a policy (`/_resources`). */
async function resourceKinds() {
  if (!kinds) {
    const list = await api('/_resources');
    kinds = Object.fromEntries(list.resources.map(r => [r.name, { path: r.path, policy: !!r.policy, plural: r.pluralDisplayName }]));
  }
  return kinds;
}

/** A mesh insight's counts of policy kinds only (it counts every mesh-scoped type). */
const policyCounts = (insight, k) => Object.entries(insight.policies || {}).filter(([kind]) => k[kind]?.policy);

const lastSubscription = insight => (insight?.subscriptions || []).slice(-1)[0];

/** Every zone ingress and egress with its insight (none where the API has none to give). */
const zoneProxies = () => Promise.all([
  maybe('/zoneingresses+insights?size=1000', { items: [] }),
  maybe('/zoneegresses+insights?size=1000', { items: [] }),
]).then(([ingresses, egresses]) => ({ ingresses, egresses }));

/** The zone a zone ingress or egress (`spec`: its resource field) runs in. */
const proxyZone = (x, spec) => x[spec]?.zone || zoneOf(x);
const inZone = (list, spec, zone) => list.items.filter(x => proxyZone(x, spec) === zone);

/** A proxy certificate past 90% of its life (rotation is due at 80%) or expired. */
function certificateWarning(d) {
  const m = d.dataplaneInsight?.mTLS;
  const expires = Date.parse(m?.certificateExpirationTime);
  if (Number.isNaN(expires)) return null;
  const issued = Date.parse(m.lastCertificateRegeneration);
  const now = Date.now();
  if (expires <= now) return `Proxy ${d.mesh}/${d.name}: its certificate expired at ${m.certificateExpirationTime}.`;
  if (!Number.isNaN(issued) && now > issued + 0.9 * (expires - issued)) {
    return `Proxy ${d.mesh}/${d.name}: its certificate expires at ${m.certificateExpirationTime} and was not rotated.`;
  }
  return null;
}

async function home() {
  info = info || await api('/');
  const [k, meshes, dps, zones, { ingresses, egresses }] = await Promise.all([
    resourceKinds(),
    api('/mesh-insights'),
    api('/dataplanes+insights?size=1000'),
    info.mode === 'global' ? maybe('/zones+insights') : null,
    zoneProxies(),
  ]);
  const online = dps.items.filter(d => d.online).length;
  const warnings = [];
  if (zones) {
    for (const z of zones.items.filter(z => !z.online && z.zone.enabled !== false)) warnings.push(`Zone ${z.name} is offline.`);
    const versions = new Set(zones.items.map(z => lastSubscription(z.zoneInsight)?.version?.kumaCp?.version).filter(Boolean));
    if (versions.size > 1) warnings.push(`Zones run different versions: ${[...versions].join(', ')}.`);
  }
  const proxies = [...dps.items.map(d => [`Proxy ${d.mesh}/${d.name}`, d.dataplaneInsight]),
    ...ingresses.items.map(i => [`Zone ingress ${i.name}`, i.zoneIngressInsight]),
    ...egresses.items.map(e => [`Zone egress ${e.name}`, e.zoneEgressInsight])];
  for (const [what, insight] of proxies) {
    // uint64 counters are strings in Kuma's JSON.
    const rejected = Number(lastSubscription(insight)?.status?.total?.responsesRejected || 0);
    if (rejected > 0) warnings.push(`${what} rejected ${rejected} configuration(s).`);
  }
  for (const d of dps.items) {
    const w = certificateWarning(d);
    if (w) warnings.push(w);
  }
  for (const m of meshes.items) for (const w of m.warnings || []) warnings.push(`Mesh ${m.name}: ${w}`);
  const policies = meshes.items.reduce((n, m) => n + policyCounts(m, k).reduce((a, [, p]) => a + p.total, 0), 0);
  const page = [
    h('h1', {}, `${info.product} ${info.version}`),
    h('p', { class: 'muted' }, `Mode ${info.mode} · instance ${info.instanceId}`),
    h('div', { class: 'cards' },
      zones ? card('Zones online', `${zones.items.filter(z => z.online).length} / ${zones.total}`) : null,
      card('Meshes', meshes.total),
      card('Data plane proxies online', `${online} / ${dps.total}`),
      card('Zone ingresses online', `${ingresses.items.filter(i => i.online).length} / ${ingresses.items.length}`),
      card('Zone egresses online', `${egresses.items.filter(e => e.online).length} / ${egresses.items.length}`),
      card('Policies', policies)),
    h('h2', {}, 'Warnings'),
    warnings.length ? h('ul', {}, warnings.map(w => h('li', { class: 'warn' }, w))) : h('p', { class: 'ok' }, 'None.'),
  ];
  if (dps.total === 0 && info.mode !== 'global') page.push(...onboarding(await maybe('/config', {})));
  return page;
}

/** The commands for this control plane: its data plane server's port and the CA file it wrote. */
function onboarding(config) {
  const cp = `https://${location.hostname}:${config.dpServer?.port ?? 5678}`;
  const ca = config.general?.workDir ? `${config.general.workDir.replace(/\/$/, '')}/dp-server-ca.pem` : 'dp-server-ca.pem';
  const yaml = 'type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 8080\n    servicePort: 80\n    tags:\n      kuma.io/service: web\n      kuma.io/protocol: http\n';
  const steps = [
    ['Issue a token for the proxy', 'kumactl generate dataplane-token --name web-1 --mesh default > web-1.token'],
    ['Describe the proxy (web-1.yaml)', yaml],
    ['Start it (with the CA of this control plane\'s data plane server, which it wrote to the file named here)', `kuma-dp run --cp-address ${cp} --ca-cert-file ${ca} --dataplane-token-file web-1.token --dataplane-file web-1.yaml`],
  ];
  return [h('h2', {}, 'Add a first data plane proxy'),
    h('p', {}, `The control plane is running in ${info.mode} mode. This page shows the proxy as soon as it connects.`),
    h('ol', {}, steps.map(([what, cmd]) => h('li', {}, what, ' ', copyButton(cmd), h('pre', {}, cmd))))];
}

const kdsCounts = s => `${s?.status?.total?.responsesSent ?? 0} / ${s?.status?.total?.responsesAcknowledged ?? 0} / ${s?.status?.total?.responsesRejected ?? 0}`;

async function zonesPage() {
  const [zones, { ingresses, egresses }] = await Promise.all([api('/zones+insights'), zoneProxies()]);
  return [h('h1', {}, 'Zones'), table(['Name', 'Status', 'Zone CP version', 'Last connected', 'Ingresses', 'Egresses', 'KDS sent / acknowledged / rejected'], zones.items.map(z => {
    const s = lastSubscription(z.zoneInsight) || {};
    return [link(`/zones/${enc(z.name)}`, z.name), z.zone?.enabled === false ? h('span', { class: 'muted' }, 'Disabled') : state(z.online),
      s.version?.kumaCp?.version || '-', when(s.connectTime), inZone(ingresses, 'zoneIngress', z.name).length, inZone(egresses, 'zoneEgress', z.name).length, kdsCounts(s)];
  }))];
}

async function zonePage(name) {
  const [z, { ingresses, egresses }, dps] = await Promise.all([api(`/zones+insights/${enc(name)}`),
    zoneProxies(), api('/dataplanes+insights?size=1000')]);
  const subs = z.zoneInsight?.subscriptions || [];
  const last = subs.slice(-1)[0];
  return [h('h1', {}, `Zone ${z.name}`),
    h('p', {}, state(z.online), last?.version?.kumaCp?.version ? ` · zone CP ${last.version.kumaCp.version}` : '', last ? ` · connected ${when(last.connectTime)}` : ''),
    h('h2', {}, 'Data plane proxies'), dataplaneTable(dps.items.filter(d => zoneOf(d) === name)),
    h('h2', {}, 'Zone ingresses'), zoneProxyTable('zoneingresses', 'zoneIngress', inZone(ingresses, 'zoneIngress', name)),
    h('h2', {}, 'Zone egresses'), zoneProxyTable('zoneegresses', 'zoneEgress', inZone(egresses, 'zoneEgress', name)),
    h('h2', {}, 'Subscriptions'),
    table(['Global instance', 'Connected', 'Disconnected', 'KDS sent / acknowledged / rejected'], subs.slice().reverse().map(s =>
      [s.globalInstanceId || '-', when(s.connectTime), s.disconnectTime ? when(s.disconnectTime) : '-', kdsCounts(s)])),
    h('h2', {}, 'Per type (current subscription)'),
    table(['Type', 'Sent', 'Acknowledged', 'Rejected'], Object.entries(last?.status?.stat || {}).map(([t, s]) =>
      [t, s.responsesSent ?? 0, s.responsesAcknowledged ?? 0, s.responsesRejected ?? 0]))];
}

function zoneProxyTable(plural, spec, items) {
  return table(['Name', 'Zone', 'Address', 'Status'], items.map(x => {
    const n = x[spec]?.networking || {};
    const address = n.advertisedAddress ? `${n.advertisedAddress}:${n.advertisedPort}` : n.address ? `${n.address}:${n.port}` : '-';
    return [link(`/${plural}/${enc(x.name)}`, displayName(x)), proxyZone(x, spec) || '-', address, state(x.online)];
  }));
}

async function zoneProxiesPage() {
  const [ingresses, egresses] = await Promise.all([api('/zoneingresses+insights?size=1000'), api('/zoneegresses+insights?size=1000')]);
  return [h('h1', {}, 'Zone proxies'),
    h('h2', {}, 'Zone ingresses'), zoneProxyTable('zoneingresses', 'zoneIngress', ingresses.items),
    h('h2', {}, 'Zone egresses'), zoneProxyTable('zoneegresses', 'zoneEgress', egresses.items)];
}

async function zoneProxyPage(plural, name) {
  const [spec, insightField, title] = plural === 'zoneingresses' ? ['zoneIngress', 'zoneIngressInsight', 'Zone ingress'] : ['zoneEgress', 'zoneEgressInsight', 'Zone egress'];
  const o = await api(`/${plural}/${enc(name)}/_overview`);
  const r = o[spec] || {};
  const sub = lastSubscription(o[insightField]);
  const n = r.networking || {};
  return [h('h1', {}, `${title} ${displayName(o)}`),
    displayName(o) !== o.name ? h('p', { class: 'muted' }, `Stored here as ${o.name}`) : null,
    h('p', {}, state(o.online), ` · zone ${proxyZone(o, spec) || '-'}`, sub?.version?.envoy?.version ? ` · Envoy ${sub.version.envoy.version}` : ''),
    table(['Address', 'Advertised', 'Admin port'], [[`${n.address || '-'}:${n.port ?? '-'}`, n.advertisedAddress ? `${n.advertisedAddress}:${n.advertisedPort}` : '-', n.admin?.port ?? '-']]),
    plural === 'zoneingresses' ? [h('h2', {}, 'Services it makes reachable from other zones'),
      table(['Mesh', 'Service', 'Instances', 'Tags'], (r.availableServices || []).map(s =>
        [s.mesh, s.tags?.['kuma.io/service'] || '-', s.instances ?? '-', tags(s.tags)]))] : null,
    h('h2', {}, 'Subscriptions'),
    table(['Control plane instance', 'Connected', 'xDS sent / acknowledged / rejected'], (o[insightField]?.subscriptions || []).slice().reverse().map(s =>
      [s.controlPlaneInstanceId || '-', when(s.connectTime), kdsCounts(s)])),
    h('h2', {}, 'Envoy'),
    inspectButton('Load the Envoy configuration', `/${plural}/${enc(name)}/xds`),
    inspectButton('Load the stats', `/${plural}/${enc(name)}/stats`),
    inspectButton('Load the clusters', `/${plural}/${enc(name)}/clusters`),
    h('h2', {}, 'Definition'), yamlBlock(r)];
}

async function meshesPage() {
  const [k, meshes] = await Promise.all([resourceKinds(), api('/mesh-insights')]);
  return [h('h1', {}, 'Meshes'), table(['Name', 'mTLS', 'Data plane proxies online', 'Policies'], meshes.items.map(m =>
    [link(`/meshes/${enc(m.name)}`, m.name), m.mTLS?.ca?.backend || 'off', `${m.dataplanes.online} / ${m.dataplanes.total}`,
      policyCounts(m, k).map(([kind, v]) => `${kind} ${v.total}`).join(', ') || '-']))];
}

function listeners(gateway) {
  return table(['Port', 'Protocol', 'Hostname', 'Tags', 'TLS'], (gateway.conf?.listeners || []).map(l =>
    [l.port, l.protocol, l.hostname || '*', tags(l.tags) || '-', l.tls ? `${l.tls.mode || 'TERMINATE'}` : '-']));
}

async function meshPage(mesh) {
  const [k, m, insight, services, dps, gateways] = await Promise.all([
    resourceKinds(), api(`/meshes/${enc(mesh)}`), api(`/mesh-insights/${enc(mesh)}`),
    maybe(`/meshes/${enc(mesh)}/service-insights`, { items: [] }), api(`/meshes/${enc(mesh)}/dataplanes+insights?size=1000`),
    maybe(`/meshes/${enc(mesh)}/meshgateways?size=1000`, { items: [] }),
  ]);
  const ca = insight.mTLS?.ca;
  const mtls = m.mtls?.enabledBackend
    ? `mTLS with backend ${m.mtls.enabledBackend}${ca ? `, CA expires ${when(ca.expirationTime)}` : ''}`
    : 'mTLS off';
  return [h('h1', {}, `Mesh ${m.name}`), h('p', {}, mtls, ' · ', link(`/meshes/${enc(mesh)}/topology`, 'Topology')),
    (insight.warnings || []).length ? h('ul', {}, insight.warnings.map(w => h('li', { class: 'warn' }, w))) : null,
    h('h2', {}, 'Services'),
    table(['Service', 'Status', 'Proxies online'], services.items.map(s => [s.name, s.status || '-', `${s.dataplanes?.online ?? 0} / ${s.dataplanes?.total ?? 0}`])),
    h('h2', {}, 'Data plane proxies'), dataplaneTable(dps.items),
    h('h2', {}, 'Gateways'),
    gateways.items.length ? gateways.items.map(g => h('section', {}, h('h3', {}, link(`/meshes/${enc(mesh)}/meshgateways/${enc(g.name)}`, g.name)), listeners(g)))
      : h('p', { class: 'muted' }, 'No MeshGateway.'),
    h('h2', {}, 'Policies'),
    table(['Kind', 'Count'], policyCounts(insight, k).map(([kind, v]) => [link(`/meshes/${enc(mesh)}/${enc(k[kind].path)}`, kind), v.total])),
    h('h2', {}, 'Definition'), yamlBlock(m)];
}

const inboundServices = d => [...new Set((d.dataplane?.networking?.inbound || []).map(i => i.tags?.['kuma.io/service'])
  .concat(d.dataplane?.networking?.gateway?.tags?.['kuma.io/service']).filter(Boolean))];

function dataplaneTable(items) {
  const global = info?.mode === 'global';
  return table(['Mesh', 'Name', ...(global ? ['Zone'] : []), 'Services', 'Address', 'Status'], items.map(d => [
    d.mesh, link(`/meshes/${enc(d.mesh)}/dataplanes/${enc(d.name)}`, displayName(d)), ...(global ? [zoneOf(d) || '-'] : []),
    inboundServices(d).join(', ') || '-', d.dataplane?.networking?.address || '-', state(d.online)]));
}

function select(label, current, values) {
  const el = h('select', { 'aria-label': label }, h('option', { value: '' }, `Any ${label.toLowerCase()}`), values.map(v => h('option', { value: v }, v)));
  el.value = values.includes(current) ? current : '';
  return el;
}

async function dataplanesPage() {
  const dps = await api('/dataplanes+insights?size=1000');
  const q = new URLSearchParams(location.search);
  const distinct = f => [...new Set(dps.items.map(f).filter(Boolean))].sort();
  const search = h('input', { type: 'search', value: q.get('q') || '', placeholder: 'Name or service', 'aria-label': 'Filter by name or service' });
  const mesh = select('Mesh', q.get('mesh'), distinct(d => d.mesh));
  const zone = info?.mode === 'global' ? select('Zone', q.get('zone'), distinct(zoneOf)) : null;
  const status = h('select', { 'aria-label': 'Status' }, h('option', { value: '' }, 'Any status'), h('option', { value: 'online' }, 'Online'), h('option', { value: 'offline' }, 'Offline'));
  status.value = q.get('status') || '';
  const list = h('div');
  const apply = () => {
    const text = search.value.toLowerCase();
    const shown = dps.items.filter(d => (!text || d.name.toLowerCase().includes(text) || displayName(d).toLowerCase().includes(text) || inboundServices(d).some(s => s.toLowerCase().includes(text)))
      && (!mesh.value || d.mesh === mesh.value)
      && (!zone?.value || zoneOf(d) === zone.value)
      && (!status.value || (status.value === 'online') === !!d.online));
    list.replaceChildren(h('p', { class: 'muted' }, `${shown.length} of ${dps.items.length}`), dataplaneTable(shown));
    const params = new URLSearchParams();
    if (search.value) params.set('q', search.value);
    if (mesh.value) params.set('mesh', mesh.value);
    if (zone?.value) params.set('zone', zone.value);
    if (status.value) params.set('status', status.value);
    history.replaceState(null, '', `${location.pathname}${params.toString() ? `?${params}` : ''}`);
  };
  search.addEventListener('input', apply);
  for (const s of [mesh, zone, status]) s?.addEventListener('change', apply);
  apply();
  return [h('h1', {}, 'Data plane proxies'), h('div', { class: 'filters' }, search, mesh, zone, status), list];
}

/** Kuma's KRI `kri_<short>_<mesh>_<zone>_<namespace>_<name>_<section>`: the policy's name. */
const kriName = kri => (kri || '').split('_')[5] || kri;

async function dataplanePage(mesh, name) {
  const path = `/meshes/${enc(mesh)}/dataplanes/${enc(name)}`;
  const [k, o, rules, policies] = await Promise.all([resourceKinds(), api(`${path}/_overview`), maybe(`${path}/_rules`), maybe(`${path}/_policies`)]);
  const net = o.dataplane?.networking || {};
  const sub = lastSubscription(o.dataplaneInsight);
  const cert = o.dataplaneInsight?.mTLS;
  const certWarning = certificateWarning(o);
  return [h('h1', {}, `Data plane proxy ${displayName(o)}`),
    displayName(o) !== o.name ? h('p', { class: 'muted' }, `Stored here as ${o.name}`) : null,
    h('p', {}, state(o.online), ' · mesh ', link(`/meshes/${enc(o.mesh)}`, o.mesh), zoneOf(o) ? ` · zone ${zoneOf(o)}` : '',
      sub?.version?.envoy?.version ? ` · Envoy ${sub.version.envoy.version}` : '', sub ? ` · connected ${when(sub.connectTime)}` : ''),
    net.gateway ? h('p', {}, `Gateway (${(net.gateway.type || 'DELEGATED').toLowerCase()}) · ${tags(net.gateway.tags)}`) : null,
    h('h2', {}, 'Inbounds'),
    table(['Port', 'Service port', 'Tags'], (net.inbound || []).map(i => [i.port, i.servicePort ?? '-', tags(i.tags)])),
    h('h2', {}, 'Outbounds'),
    table(['Address', 'Port', 'To'], (net.outbound || []).map(x => [x.address || '127.0.0.1', x.port, tags(x.tags) || x.backendRef?.name || '-'])),
    h('h2', {}, 'Certificate'),
    cert?.certificateExpirationTime ? [
      h('p', {}, `SPIFFE ID spiffe://${o.mesh}/${inboundServices(o)[0] || '-'} · backend ${cert.issuedBackend || '-'}`),
      h('p', {}, `Expires ${when(cert.certificateExpirationTime)} · issued ${when(cert.lastCertificateRegeneration)} · ${cert.certificateRegenerations ?? 0} regeneration(s)`),
      certWarning ? h('p', { class: 'warn' }, certWarning) : null]
      : h('p', { class: 'muted' }, 'No mesh certificate (mTLS off, or not issued yet).'),
    h('h2', {}, 'Policies that apply'),
    policies ? table(['Kind', 'From'], (policies.policies || []).map(p => [
      k[p.kind] ? link(`/meshes/${enc(o.mesh)}/${enc(k[p.kind].path)}`, p.kind) : p.kind,
      (p.origins || []).map(x => kriName(x.kri)).join(', ') || '-'])) : h('p', { class: 'muted' }, 'Not available.'),
    h('h2', {}, 'Rules'), rules ? yamlBlock(rules) : h('p', { class: 'muted' }, 'Not available.'),
    h('h2', {}, 'Envoy'),
    inspectButton('Load the Envoy configuration', `${path}/xds`),
    inspectButton('Load the stats', `${path}/stats`),
    inspectButton('Load the clusters', `${path}/clusters`),
    h('h2', {}, 'Definition'), yamlBlock(o.dataplane)];
}

/** A policy's top-level target, as Kuma's GUI lists it. */
function target(r) {
  const t = r.spec?.targetRef;
  if (!t) return r.spec?.selectors ? 'selectors' : '-';
  return [t.kind, t.name, t.sectionName, tags(t.tags || t.labels)].filter(Boolean).join(' ');
}

async function listPage(mesh, plural) {
  const list = await api(`/meshes/${enc(mesh)}/${enc(plural)}?size=1000`);
  const display = Object.values(await resourceKinds()).find(k => k.path === plural)?.plural || plural;
  return [h('h1', {}, `${display} in mesh ${mesh}`), table(['Name', 'Target', 'Origin', 'Zone'], list.items.map(r =>
    [link(`/meshes/${enc(mesh)}/${enc(plural)}/${enc(r.name)}`, displayName(r)), target(r), r.labels?.['kuma.io/origin'] || '-', zoneOf(r) || '-']))];
}

async function resourcePage(mesh, plural, name) {
  const path = `/meshes/${enc(mesh)}/${enc(plural)}/${enc(name)}`;
  const [r, selected] = await Promise.all([api(path), maybe(`${path}/_resources/dataplanes`)]);
  const origin = r.labels?.['kuma.io/origin'];
  return [h('h1', {}, `${r.type} ${displayName(r)}`),
    displayName(r) !== r.name ? h('p', { class: 'muted' }, `Stored here as ${r.name}`) : null,
    h('p', {}, 'Mesh ', link(`/meshes/${enc(r.mesh)}`, r.mesh),
      ` · origin ${origin === 'zone' ? `zone ${zoneOf(r) || '-'}` : origin || 'this control plane'}`,
      r.labels?.['kuma.io/display-name'] ? ` · display name ${r.labels['kuma.io/display-name']}` : '',
      r.spec?.targetRef ? ` · target ${target(r)}` : ''),
    r.type === 'MeshGateway' ? [h('h2', {}, 'Listeners'), listeners(r)] : null,
    selected ? [h('h2', {}, 'Data plane proxies it selects'), table(['Name', 'Zone'], (selected.items || []).map(d =>
      [link(`/meshes/${enc(mesh)}/dataplanes/${enc(d.name)}`, displayName(d)), zoneOf(d) || '-']))] : null,
    h('h2', {}, 'Definition'), yamlBlock(r)];
}

// ---------- topology ----------

/**
 * Zones side by side with the services each runs, and the routes between zones: another zone
 * reaches a zone's services through that zone's ingress (and first through its own egress when
 * the mesh sends cross-zone traffic through egresses). Drawn from proxies and ingresses only.
 */
async function topologyPage(mesh) {
  const [m, dps, { ingresses, egresses }, zones] = await Promise.all([
    api(`/meshes/${enc(mesh)}`), api(`/meshes/${enc(mesh)}/dataplanes+insights?size=1000`), zoneProxies(),
    info?.mode === 'global' ? maybe('/zones+insights', { items: [] }) : { items: [] },
  ]);
  const local = info?.mode === 'standalone' ? 'standalone' : 'this zone';
  const byZone = new Map();
  const zone = name => {
    if (!byZone.has(name)) byZone.set(name, { name, online: null, services: new Map(), ingress: null, egress: null });
    return byZone.get(name);
  };
  for (const z of zones.items) zone(z.name).online = z.online;
  const service = (z, s) => {
    if (!z.services.has(s)) z.services.set(s, { online: 0, total: 0, exposed: false });
    return z.services.get(s);
  };
  for (const d of dps.items) {
    const z = zone(zoneOf(d) || local);
    for (const s of inboundServices(d)) {
      const entry = service(z, s);
      entry.total += 1;
      if (d.online) entry.online += 1;
    }
  }
  for (const i of ingresses.items) {
    const z = zone(proxyZone(i, 'zoneIngress') || local);
    const offered = (i.zoneIngress?.availableServices || []).filter(s => s.mesh === mesh && s.tags?.['kuma.io/service']);
    z.ingress = z.ingress || { name: displayName(i), online: i.online, services: new Set() };
    for (const s of offered) {
      const entry = service(z, s.tags['kuma.io/service']);
      entry.exposed = true;
      // A remote zone's services are known here only from its ingress.
      if (!entry.total) { entry.total = s.instances ?? 0; entry.online = entry.total; }
      z.ingress.services.add(s.tags['kuma.io/service']);
    }
  }
  for (const e of egresses.items) {
    const z = zone(proxyZone(e, 'zoneEgress') || local);
    z.egress = z.egress || { name: displayName(e), online: e.online };
  }
  const all = [...byZone.values()].sort((a, b) => a.name.localeCompare(b.name));
  const viaEgress = !!m.routing?.zoneEgress;
  const routes = [];
  for (const to of all.filter(z => z.ingress?.services.size)) {
    for (const from of all.filter(z => z !== to)) {
      routes.push({ from, to, egress: viaEgress ? from.egress : null, services: [...to.ingress.services].sort() });
    }
  }
  return [h('h1', {}, `Topology of mesh ${mesh}`),
    h('p', { class: 'muted' }, viaEgress ? 'Cross-zone traffic leaves through the zone egress (routing.zoneEgress) and enters through the ingress of the zone it goes to.'
      : 'Cross-zone traffic enters through the ingress of the zone it goes to.'),
    all.length ? drawTopology(all, routes) : h('p', { class: 'muted' }, 'No zone, proxy or ingress in this mesh yet.'),
    h('h2', {}, 'Cross-zone routes'),
    table(['From zone', 'To zone', 'Through', 'Services'], routes.map(r => [r.from.name, r.to.name,
      [r.egress ? `egress ${r.egress.name}` : null, `ingress ${r.to.ingress.name}`].filter(Boolean).join(' then '), r.services.join(', ')]),
    'No route between zones: no zone has an ingress offering this mesh\'s services.')];
}

function drawTopology(zones, routes) {
  const colW = 230, gap = 50, lane = 10;
  const top = 24 + routes.length * lane;
  const x0 = i => 20 + i * (colW + gap);
  const index = new Map(zones.map((z, i) => [z, i]));
  const node = (x, y, w, ht, cls, label, title) => h('svg:g', { class: cls },
    h('svg:title', {}, title), h('svg:rect', { x, y, width: w, height: ht, rx: 5 }),
    h('svg:text', { x: x + 8, y: y + ht / 2 + 5 }, label.length > 30 ? `${label.slice(0, 29)}…` : label));
  const shapes = [];
  let bottom = top + 80;
  for (const z of zones) {
    const x = x0(index.get(z));
    if (z.ingress) shapes.push(node(x + colW - 120, top, 120, 28, `ingress ${z.ingress.online ? 'up' : 'down'}`, `ingress ${z.ingress.name}`, `Zone ingress ${z.ingress.name} (${z.ingress.online ? 'online' : 'offline'})`));
    const stateText = z.online === null ? '' : z.online ? ' · online' : ' · offline';
    shapes.push(node(x, top + 40, colW, 34, `zone ${z.online === false ? 'down' : 'up'}`, `zone ${z.name}${stateText}`, `Zone ${z.name}${stateText}`));
    let y = top + 84;
    if (z.egress) {
      shapes.push(node(x, y, colW, 26, `egress ${z.egress.online ? 'up' : 'down'}`, `egress ${z.egress.name}`, `Zone egress ${z.egress.name}`));
      y += 34;
    }
    for (const [name, s] of [...z.services.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      shapes.push(node(x + 12, y, colW - 12, 26, `service ${s.online ? 'up' : 'down'}${s.exposed ? ' exposed' : ''}`, `${name} ${s.online}/${s.total}`,
        `Service ${name} in zone ${z.name}: ${s.online} of ${s.total} online${s.exposed ? ', reachable from other zones' : ''}`));
      y += 32;
    }
    bottom = Math.max(bottom, y);
  }
  const edges = routes.map((r, k) => {
    const x1 = x0(index.get(r.from)) + 20 + (k % 8) * 9;
    const x2 = x0(index.get(r.to)) + colW - 100 + (k % 8) * 9;
    const y = 12 + k * lane;
    return h('svg:path', { class: 'route', d: `M ${x1} ${top + 40} V ${y} H ${x2} V ${top}`, 'marker-end': 'url(#arrow)' },
      h('svg:title', {}, `${r.from.name} reaches ${r.services.join(', ')} in ${r.to.name}${r.egress ? ` through egress ${r.egress.name} and` : ' through'} ingress ${r.to.ingress.name}`));
  });
  const width = x0(zones.length) - gap + 20;
  return h('div', { class: 'table-wrap' }, h('svg:svg', { class: 'topology', width, height: bottom + 10, viewBox: `0 0 ${width} ${bottom + 10}`, role: 'img',
    'aria-label': `Zones ${zones.map(z => z.name).join(', ')} with their services and ${routes.length} cross-zone route(s)` },
  h('svg:defs', {}, h('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    h('svg:path', { d: 'M 0 0 L 10 5 L 0 10 z' }))),
  edges, shapes));
}

async function topologyIndex() {
  const meshes = await api('/meshes');
  if (meshes.items.length === 1) return topologyPage(meshes.items[0].name);
  return [h('h1', {}, 'Topology'), h('p', {}, 'Pick a mesh:'), h('ul', {}, meshes.items.map(m => h('li', {}, link(`/meshes/${enc(m.name)}/topology`, m.name))))];
}

// ---------- routing ----------

const routes = [
  [/^\/?$/, home],
  [/^\/zones$/, zonesPage],
  [/^\/zones\/([^/]+)$/, zonePage],
  [/^\/zone-proxies$/, zoneProxiesPage],
  [/^\/(zoneingresses|zoneegresses)\/([^/]+)$/, zoneProxyPage],
  [/^\/topology$/, topologyIndex],
  [/^\/meshes$/, meshesPage],
  [/^\/dataplanes$/, dataplanesPage],
  [/^\/meshes\/([^/]+)$/, meshPage],
  [/^\/meshes\/([^/]+)\/topology$/, topologyPage],
  [/^\/meshes\/([^/]+)\/dataplanes\/([^/]+)$/, dataplanePage],
  [/^\/meshes\/([^/]+)\/([^/]+)$/, listPage],
  [/^\/meshes\/([^/]+)\/([^/]+)\/([^/]+)$/, resourcePage],
];

let rendering = null;
/** The page the content shows, once it has been drawn. */
let shown = null;

const needsSignIn = e => e instanceof ApiError && e.message.endsWith('authentication required');

async function render() {
  const path = location.pathname.slice(base.length + '/gui'.length);
  const app = document.getElementById('app');
  if (!info) {
    try {
      info = await api('/');
    } catch (e) {
      if (!needsSignIn(e)) showError(e.message);
      return;
    }
    buildNav();
  }
  for (const a of document.querySelectorAll('nav a')) {
    const target = a.pathname.slice(base.length + '/gui'.length);
    if (target && path.startsWith(target) || !target && !path.replace('/', '')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  for (const [pattern, page] of routes) {
    const m = path.match(pattern);
    if (!m) continue;
    const run = page(...m.slice(1).map(decodeURIComponent));
    rendering = run;
    try {
      const content = await run;
      if (rendering !== run) return; // a newer render started meanwhile
      // A live update must not take the cursor out of the field being typed in (what the
      // reader loaded on demand is kept by `inspectButton`).
      const focused = app.contains(document.activeElement) ? document.activeElement.getAttribute('aria-label') : null;
      const scroll = window.scrollY;
      app.replaceChildren(...[content].flat(3).filter(Boolean));
      window.scrollTo(0, scroll);
      const again = focused && app.querySelector(`[aria-label="${CSS.escape(focused)}"]`);
      if (again) {
        again.focus();
        if (again.setSelectionRange && again.value) again.setSelectionRange(again.value.length, again.value.length);
      }
      const title = app.querySelector('h1')?.textContent;
      document.title = title ? `${title} · Kuma control plane` : 'Kuma control plane';
      shown = location.pathname;
      showError('');
    } catch (e) {
      if (needsSignIn(e)) return;
      showError(e.message);
      // A live update that failed leaves the page as it was; a page never drawn says so.
      if (shown !== location.pathname && rendering === run) {
        app.replaceChildren(h('h1', {}, 'This page could not be loaded'), h('p', {}, e.message), link('', 'Home'));
      }
    }
    return;
  }
  app.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No page here. '), link('', 'Home'));
}

async function navigate(href) {
  loaded.page = null;
  history.pushState(null, '', href);
  window.scrollTo(0, 0);
  await render();
  document.getElementById('app').focus();
}

document.addEventListener('click', e => {
  const a = e.target.closest('a');
  if (!a || a.origin !== location.origin || !a.pathname.startsWith(`${base}/gui`) || e.metaKey || e.ctrlKey || e.shiftKey) return;
  if (a.hash && a.pathname === location.pathname) return; // the skip link
  e.preventDefault();
  navigate(a.href);
});
window.addEventListener('popstate', () => {
  loaded.page = null;
  render();
});

// ---------- live updates ----------

let pending = false;
function scheduleRender() {
  if (pending) return;
  pending = true;
  // Changes arriving together are shown together.
  setTimeout(() => { pending = false; render(); }, 100);
}

/** Ends the wait before the next attempt to follow the stream (a token was just given). */
let wake = () => {};
const restartFollow = () => wake();

// A page the browser keeps for its back button (bfcache) would keep its stream, and so one of
// the six connections a browser opens to a host over HTTP/1.1, until the next keep-alive: a
// few pages visited in a row would leave the current one waiting for a connection.
let stream = new AbortController();
window.addEventListener('pagehide', () => stream.abort());
window.addEventListener('pageshow', e => {
  if (!e.persisted) return;
  stream = new AbortController();
  restartFollow();
  scheduleRender();
});

async function follow() {
  const live = document.getElementById('live');
  for (let attempt = 0; ; attempt++) {
    try {
      const headers = { Accept: 'text/event-stream' };
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = `Bearer ${token}`;
      const r = await fetch(`${base}/events`, { headers, signal: stream.signal });
      if (r.status === 401) {
        live.textContent = 'Not signed in';
        live.className = 'muted';
        await new Promise(resolve => { wake = resolve; });
        attempt = -1;
        continue;
      }
      if (!r.ok || !r.body) throw new Error(`${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error('closed');
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = (block.match(/^event: (.*)$/m) || [])[1];
          if (event === 'ready') {
            live.textContent = attempt ? 'Live again' : 'Live';
            live.className = 'ok';
            // What changed while the stream was down is shown now.
            if (attempt) scheduleRender();
            attempt = 0;
          }
          if (event === 'change' || event === 'resync') scheduleRender();
        }
      }
    } catch (_) {
      if (stream.signal.aborted) {
        // Hidden: wait to be shown again (pageshow).
        await new Promise(resolve => { wake = resolve; });
        attempt = -1;
        continue;
      }
      live.textContent = 'Connection to the control plane lost; reconnecting…';
      live.className = 'bad';
      await new Promise(resolve => { wake = resolve; setTimeout(resolve, Math.min(1000 * 2 ** attempt, 15000)); });
    }
  }
}

function buildNav() {
  document.querySelector('nav').replaceChildren(...[
    link('', 'Home'),
    info?.mode === 'global' ? link('/zones', 'Zones') : null,
    link('/zone-proxies', 'Zone proxies'),
    link('/meshes', 'Meshes'),
    link('/dataplanes', 'Data plane proxies'),
    link('/topology', 'Topology'),
  ].filter(Boolean));
}

render();
follow();
