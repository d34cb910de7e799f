// The GUI: a page per resource, every one a deep link under /gui, reading only the public API
// (what it shows a script can read too) and following the store's change stream (`/events`)
// instead of polling. Text from the API only ever reaches the page as DOM text, never as HTML.

const base = location.pathname.slice(0, location.pathname.indexOf('/gui'));
const TOKEN_KEY = 'kuma-gui-token';

// ---------- DOM ----------

/** An element with attributes (`on*` are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
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

function copyButton(text) {
  return h('button', { type: 'button', onclick: e => navigator.clipboard.writeText(text).then(() => { e.target.textContent = 'Copied'; }) }, 'Copy');
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
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', 'aria-label': 'User token' });
  app.replaceChildren(h('h1', {}, 'Sign in'),
    h('p', {}, 'This control plane needs a user token (kumactl generate user-token, or the admin token).'),
    h('form', { onsubmit: e => { e.preventDefault(); sessionStorage.setItem(TOKEN_KEY, input.value.trim()); render(); } },
      input, ' ', h('button', { type: 'submit' }, 'Sign in')));
}

// ---------- pages ----------

let info = null;
let kinds = null;

/** Every resource type by name: its path and whether it is a policy (`/_resources`). */
async function resourceKinds() {
  if (!kinds) {
    const list = await api('/_resources');
    kinds = Object.fromEntries(list.resources.map(r => [r.name, { path: r.path, policy: !!r.policy }]));
  }
  return kinds;
}

/** A mesh insight's counts of policy kinds only (it counts every mesh-scoped type). */
const policyCounts = (insight, k) => Object.entries(insight.policies || {}).filter(([kind]) => k[kind]?.policy);

async function home() {
  info = info || await api('/');
  const [k, meshes, dps, zones] = await Promise.all([
    resourceKinds(),
    api('/mesh-insights'),
    api('/dataplanes+insights?size=1000'),
    info.mode === 'global' ? maybe('/zones+insights') : null,
  ]);
  const online = dps.items.filter(d => d.online).length;
  const warnings = [];
  if (zones) {
    for (const z of zones.items.filter(z => !z.online && z.zone.enabled !== false)) warnings.push(`Zone ${z.name} is offline.`);
    const versions = new Set(zones.items.map(z => lastSubscription(z.zoneInsight)?.version?.kumaCp?.version).filter(Boolean));
    if (versions.size > 1) warnings.push(`Zones run different versions: ${[...versions].join(', ')}.`);
  }
  for (const d of dps.items) {
    // uint64 counters are strings in Kuma's JSON.
    const rejected = Number(lastSubscription(d.dataplaneInsight)?.status?.total?.responsesRejected || 0);
    if (rejected > 0) warnings.push(`Proxy ${d.mesh}/${d.name} rejected ${rejected} configuration(s).`);
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
      card('Policies', policies)),
    h('h2', {}, 'Warnings'),
    warnings.length ? h('ul', {}, warnings.map(w => h('li', { class: 'warn' }, w))) : h('p', { class: 'ok' }, 'None.'),
  ];
  if (dps.total === 0 && info.mode !== 'global') page.push(...onboarding());
  return page;
}

function onboarding() {
  const cp = `https://${location.hostname}:5678`;
  const yaml = 'type: Dataplane\nmesh: default\nname: web-1\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 8080\n    servicePort: 80\n    tags:\n      kuma.io/service: web\n      kuma.io/protocol: http\n';
  const steps = [
    ['Issue a token for the proxy', 'kumactl generate dataplane-token --name web-1 --mesh default > web-1.token'],
    ['Describe the proxy (web-1.yaml)', yaml],
    ['Start it (with the CA of this control plane\'s data plane server)', `kuma-dp run --cp-address ${cp} --ca-cert-file dp-server-ca.pem --dataplane-token-file web-1.token --dataplane-file web-1.yaml`],
  ];
  return [h('h2', {}, 'Add a first data plane proxy'),
    h('p', {}, `The control plane is running in ${info.mode} mode. This page shows the proxy as soon as it connects.`),
    h('ol', {}, steps.map(([what, cmd]) => h('li', {}, what, ' ', copyButton(cmd), h('pre', {}, cmd))))];
}

const lastSubscription = insight => (insight?.subscriptions || []).slice(-1)[0];

async function zonesPage() {
  const zones = await api('/zones+insights');
  return [h('h1', {}, 'Zones'), table(['Name', 'Status', 'Zone CP version', 'Last connected'], zones.items.map(z => {
    const s = lastSubscription(z.zoneInsight) || {};
    return [link(`/zones/${enc(z.name)}`, z.name), state(z.online), s.version?.kumaCp?.version || '-', s.connectTime || '-'];
  }))];
}

async function zonePage(name) {
  const z = await api(`/zones+insights/${enc(name)}`);
  const subs = z.zoneInsight?.subscriptions || [];
  return [h('h1', {}, `Zone ${z.name}`), h('p', {}, state(z.online)),
    h('h2', {}, 'Subscriptions'),
    table(['Global instance', 'Connected', 'Disconnected', 'Responses sent / acknowledged / rejected'], subs.slice().reverse().map(s =>
      [s.globalInstanceId || '-', s.connectTime || '-', s.disconnectTime || '-',
        `${s.status?.total?.responsesSent ?? 0} / ${s.status?.total?.responsesAcknowledged ?? 0} / ${s.status?.total?.responsesRejected ?? 0}`])),
    h('h2', {}, 'Per type'),
    table(['Type', 'Sent', 'Acknowledged', 'Rejected'], Object.entries(subs.slice(-1)[0]?.status?.stat || {}).map(([t, s]) =>
      [t, s.responsesSent ?? 0, s.responsesAcknowledged ?? 0, s.responsesRejected ?? 0]))];
}

async function meshesPage() {
  const [k, meshes] = await Promise.all([resourceKinds(), api('/mesh-insights')]);
  return [h('h1', {}, 'Meshes'), table(['Name', 'Data plane proxies online', 'Policies'], meshes.items.map(m =>
    [link(`/meshes/${enc(m.name)}`, m.name), `${m.dataplanes.online} / ${m.dataplanes.total}`,
      policyCounts(m, k).map(([kind, v]) => `${kind} ${v.total}`).join(', ') || '-']))];
}

async function meshPage(mesh) {
  const [k, m, insight, services, dps] = await Promise.all([
    resourceKinds(), api(`/meshes/${enc(mesh)}`), api(`/mesh-insights/${enc(mesh)}`),
    maybe(`/meshes/${enc(mesh)}/service-insights`, { items: [] }), api(`/meshes/${enc(mesh)}/dataplanes+insights?size=1000`),
  ]);
  const mtls = m.mtls?.enabledBackend ? `mTLS with ${m.mtls.enabledBackend}` : 'mTLS off';
  return [h('h1', {}, `Mesh ${m.name}`), h('p', {}, mtls),
    h('h2', {}, 'Services'),
    table(['Service', 'Status', 'Proxies online'], services.items.map(s => [s.name, s.status || '-', `${s.dataplanes?.online ?? 0} / ${s.dataplanes?.total ?? 0}`])),
    h('h2', {}, 'Data plane proxies'), dataplaneTable(dps.items),
    h('h2', {}, 'Policies'),
    table(['Kind', 'Count'], policyCounts(insight, k).map(([kind, v]) => [link(`/meshes/${enc(mesh)}/${enc(k[kind].path)}`, kind), v.total])),
    h('h2', {}, 'Definition'), yamlBlock(m)];
}

function dataplaneTable(items) {
  return table(['Mesh', 'Name', 'Services', 'Address', 'Status'], items.map(d => [
    d.mesh, link(`/meshes/${enc(d.mesh)}/dataplanes/${enc(d.name)}`, d.name),
    [...new Set((d.dataplane?.networking?.inbound || []).map(i => i.tags?.['kuma.io/service']).filter(Boolean))].join(', ') || '-',
    d.dataplane?.networking?.address || '-', state(d.online)]));
}

async function dataplanesPage() {
  const dps = await api('/dataplanes+insights?size=1000');
  const q = new URLSearchParams(location.search);
  const search = h('input', { type: 'search', value: q.get('q') || '', placeholder: 'Name or service', 'aria-label': 'Filter by name or service' });
  const onlineOnly = h('select', { 'aria-label': 'Status' }, h('option', { value: '' }, 'Any status'), h('option', { value: 'online' }, 'Online'), h('option', { value: 'offline' }, 'Offline'));
  onlineOnly.value = q.get('status') || '';
  const list = h('div');
  const apply = () => {
    const text = search.value.toLowerCase();
    const shown = dps.items.filter(d => (!text || d.name.toLowerCase().includes(text)
      || (d.dataplane?.networking?.inbound || []).some(i => (i.tags?.['kuma.io/service'] || '').toLowerCase().includes(text)))
      && (!onlineOnly.value || (onlineOnly.value === 'online') === !!d.online));
    list.replaceChildren(dataplaneTable(shown));
    const params = new URLSearchParams({ ...(search.value && { q: search.value }), ...(onlineOnly.value && { status: onlineOnly.value }) });
    history.replaceState(null, '', `${location.pathname}${params.toString() ? `?${params}` : ''}`);
  };
  search.addEventListener('input', apply);
  onlineOnly.addEventListener('change', apply);
  apply();
  return [h('h1', {}, 'Data plane proxies'), h('div', { class: 'filters' }, search, onlineOnly), list];
}

async function dataplanePage(mesh, name) {
  const path = `/meshes/${enc(mesh)}/dataplanes/${enc(name)}`;
  const [o, rules] = await Promise.all([api(`${path}/_overview`), maybe(`${path}/_rules`)]);
  const net = o.dataplane?.networking || {};
  const sub = lastSubscription(o.dataplaneInsight);
  const cert = o.dataplaneInsight?.mTLS;
  const xds = h('div', {}, h('button', { type: 'button', onclick: async () => {
    try { xds.replaceChildren(h('pre', {}, await api(`${path}/xds`, { text: true }))); } catch (e) { showError(e.message); }
  } }, 'Load the Envoy configuration'));
  return [h('h1', {}, `Data plane proxy ${o.name}`),
    h('p', {}, state(o.online), ` · mesh ${o.mesh}`, sub?.version?.envoy?.version ? ` · Envoy ${sub.version.envoy.version}` : ''),
    h('h2', {}, 'Inbounds'),
    table(['Port', 'Service port', 'Tags'], (net.inbound || []).map(i => [i.port, i.servicePort ?? '-', Object.entries(i.tags || {}).map(([k, v]) => `${k}=${v}`).join(' ')])),
    h('h2', {}, 'Outbounds'),
    table(['Address', 'Port', 'To'], (net.outbound || []).map(x => [x.address || '127.0.0.1', x.port, Object.entries(x.tags || {}).map(([k, v]) => `${k}=${v}`).join(' ') || x.backendRef?.name || '-'])),
    h('h2', {}, 'Certificate'),
    cert ? h('p', {}, `Expires ${cert.certificateExpirationTime} · last issued ${cert.lastCertificateRegeneration} · backend ${cert.issuedBackend || '-'}`) : h('p', { class: 'muted' }, 'No mesh certificate (mTLS off, or not issued yet).'),
    h('h2', {}, 'Rules'), rules ? yamlBlock(rules) : h('p', { class: 'muted' }, 'Not available.'),
    h('h2', {}, 'Envoy configuration'), xds,
    h('h2', {}, 'Definition'), yamlBlock(o.dataplane)];
}

async function listPage(mesh, plural) {
  const list = await api(`/meshes/${enc(mesh)}/${enc(plural)}?size=1000`);
  return [h('h1', {}, `${plural} in ${mesh}`), table(['Name', 'Origin'], list.items.map(r =>
    [link(`/meshes/${enc(mesh)}/${enc(plural)}/${enc(r.name)}`, r.name), r.labels?.['kuma.io/origin'] || '-']))];
}

async function resourcePage(mesh, plural, name) {
  const path = `/meshes/${enc(mesh)}/${enc(plural)}/${enc(name)}`;
  const [r, selected] = await Promise.all([api(path), maybe(`${path}/_resources/dataplanes`)]);
  return [h('h1', {}, `${r.type} ${r.name}`),
    h('p', {}, `Mesh ${r.mesh} · origin ${r.labels?.['kuma.io/origin'] || 'this control plane'}${r.labels?.['kuma.io/zone'] ? ` (zone ${r.labels['kuma.io/zone']})` : ''}`),
    selected ? [h('h2', {}, 'Data plane proxies it selects'), table(['Name'], (selected.items || []).map(d => [link(`/meshes/${enc(mesh)}/dataplanes/${enc(d.name)}`, d.name)]))] : null,
    h('h2', {}, 'Definition'), yamlBlock(r)];
}

function yamlBlock(value) {
  const text = JSON.stringify(value, null, 2);
  return h('div', {}, copyButton(text), h('pre', {}, text));
}

// ---------- routing ----------

const routes = [
  [/^\/?$/, home],
  [/^\/zones$/, zonesPage],
  [/^\/zones\/([^/]+)$/, zonePage],
  [/^\/meshes$/, meshesPage],
  [/^\/dataplanes$/, dataplanesPage],
  [/^\/meshes\/([^/]+)$/, meshPage],
  [/^\/meshes\/([^/]+)\/dataplanes\/([^/]+)$/, dataplanePage],
  [/^\/meshes\/([^/]+)\/([^/]+)$/, listPage],
  [/^\/meshes\/([^/]+)\/([^/]+)\/([^/]+)$/, resourcePage],
];

let rendering = null;

async function render() {
  const path = location.pathname.slice(base.length + '/gui'.length);
  const app = document.getElementById('app');
  for (const [pattern, page] of routes) {
    const m = path.match(pattern);
    if (!m) continue;
    const run = page(...m.slice(1).map(decodeURIComponent));
    rendering = run;
    try {
      const content = await run;
      if (rendering !== run) return; // a newer render started meanwhile
      // A live update must not take the cursor out of the field being typed in.
      const focused = app.contains(document.activeElement) ? document.activeElement.getAttribute('aria-label') : null;
      app.replaceChildren(...[content].flat(2).filter(Boolean));
      const again = focused && app.querySelector(`[aria-label="${CSS.escape(focused)}"]`);
      if (again) {
        again.focus();
        if (again.setSelectionRange && again.value) again.setSelectionRange(again.value.length, again.value.length);
      }
      showError('');
    } catch (e) {
      if (!(e instanceof ApiError) || !e.message.endsWith('authentication required')) showError(e.message);
    }
    return;
  }
  app.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No page here. '), link('', 'Home'));
}

document.addEventListener('click', e => {
  const a = e.target.closest('a');
  if (!a || a.origin !== location.origin || !a.pathname.startsWith(`${base}/gui`) || e.metaKey || e.ctrlKey || e.shiftKey) return;
  e.preventDefault();
  history.pushState(null, '', a.href);
  render().then(() => document.getElementById('app').focus());
});
window.addEventListener('popstate', render);

// ---------- live updates ----------

let pending = false;
function scheduleRender() {
  if (pending) return;
  pending = true;
  // Changes arriving together are shown together.
  setTimeout(() => { pending = false; render(); }, 100);
}

async function follow() {
  const live = document.getElementById('live');
  for (let attempt = 0; ; attempt++) {
    try {
      const headers = { Accept: 'text/event-stream' };
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = `Bearer ${token}`;
      const r = await fetch(`${base}/events`, { headers });
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
          if (event === 'ready') { live.textContent = attempt ? 'Live again' : 'Live'; attempt = 0; }
          if (event === 'change' || event === 'resync') scheduleRender();
        }
      }
    } catch (_) {
      live.textContent = 'Connection to the control plane lost; reconnecting…';
      await new Promise(resolve => setTimeout(resolve, Math.min(1000 * 2 ** attempt, 15000)));
    }
  }
}

info = await maybe('/');
document.querySelector('nav').replaceChildren(...[
  link('', 'Home'),
  info?.mode === 'global' ? link('/zones', 'Zones') : null,
  link('/meshes', 'Meshes'),
  link('/dataplanes', 'Data plane proxies'),
].filter(Boolean));
render();
follow();
