// The pages a user opens, in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): the Service and Mesh console pages of each Prometheus given, checked for
// graphs drawn with data (the SVG paths Rickshaw draws and the series behind them), and the
// Zipkin UI: search by the gateway's service, open a trace, find the gateway's and the
// sidecar's spans. Screenshots go to the artifacts directory.
//
//   node dashboards.js '{"prometheus": [{"name": "debian", "url": "http://127.0.0.1:9090"}],
//                        "service": "apigateway.coolstore.svc.cluster.local",
//                        "zipkin": "http://127.0.0.1:9411", "artifacts": "DIR", "timeout": 180}'
//
// Prints PASS/FAIL per check and 'N passed, N failed'; exits 1 on a failure.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2]);
const results = { passed: 0, failed: 0 };
function check(name, ok, detail) {
  if (ok) {
    results.passed++;
    console.log(`PASS ${name}`);
  } else {
    results.failed++;
    console.log(`FAIL ${name}\n     ${JSON.stringify(detail).slice(0, 3000)}`);
  }
}

// What a console graph drew: its paths (points per path, NaN in the path data) and the series
// Rickshaw drew them from (non-null values), its legend and any error text.
function inspectGraph(id) {
  const div = document.getElementById(id);
  if (!div || !div.skiffGraph) {
    return { missing: true };
  }
  const g = div.skiffGraph;
  const paths = Array.from(div.querySelectorAll('svg path.path')).map((p) => {
    const d = p.getAttribute('d') || '';
    return { points: (d.match(/[ML]/g) || []).length, nan: /NaN/.test(d), stroke: p.getAttribute('stroke') };
  });
  const series = g.rickshawGraph
    ? g.rickshawGraph.series.map((s) => ({
        name: s.name,
        values: s.data.filter((p) => p.y !== null).map((p) => p.y),
      }))
    : [];
  const error = div.querySelector('.prom_graph_error');
  return {
    paths,
    series,
    legend: Array.from(div.querySelectorAll('.rickshaw_legend .label')).map((e) => e.textContent),
    error: error ? error.textContent : null,
    width: (div.querySelector('svg') || { clientWidth: 0 }).clientWidth,
  };
}

// A graph with data: drawn paths with points and no NaN, and a series with values.
function drawn(g, minPoints) {
  return !g.missing && !g.error && g.paths.length > 0 &&
    g.paths.some((p) => p.points >= minPoints) && g.paths.every((p) => !p.nan) &&
    g.series.some((s) => s.values.length >= minPoints) && g.width > 0;
}

async function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Reloads `url` until `ready(state)` holds for the state `probe` gathers, or the deadline.
async function until(page, url, probe, ready, deadline) {
  let state = null;
  while (Date.now() < deadline) {
    await page.goto(url, { waitUntil: 'load' });
    try {
      await page.waitForFunction(() => document.querySelectorAll('div.skiff-graph').length > 0 &&
        Array.from(document.querySelectorAll('div.skiff-graph')).every(
          (d) => d.skiffGraph && (d.skiffGraph.rendered_data !== null ||
                                  d.querySelector('.prom_graph_error'))), null, { timeout: 20000 });
    } catch (e) {
      // Not all graphs answered in time: probe what there is and try again.
    }
    state = await probe();
    if (ready(state)) {
      return state;
    }
    await sleep(3000);
  }
  return state;
}

async function servicePage(page, prom, deadline) {
  const url = `${prom.url}/consoles/skiff-service.html?service=${cfg.service}` +
    '#pctc' + encodeURIComponent(JSON.stringify({ duration: 300, endTime: 0 }));
  const failed = [];
  const missing = new Set((prom.missing || []).map((p) => prom.url + p));
  const onResponse = (r) => {
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico') && !missing.has(r.url())) {
      failed.push(`${r.status()} ${r.url()}`);
    }
  };
  page.on('response', onResponse);
  const probe = () => page.evaluate((fn) => {
    const inspect = new Function(`return (${fn})`)();
    const out = {};
    for (const id of ['client-volume', 'client-success', 'client-duration', 'by-source-volume',
                      'by-version-volume']) {
      out[id] = inspect(id);
    }
    out.title = document.getElementById('service-name') && document.getElementById('service-name').textContent;
    return out;
  }, inspectGraph.toString());
  const p99 = (s) => (s['client-duration'].series || []).find((x) => x.name === 'P99');
  const tag = `Service page (${prom.name})`;
  // Every check of the page, on one probe. The page is reloaded until all of them hold (or
  // the deadline): a fresh Prometheus has few points, and the 5 s scrapes a chaos dip shows
  // in come one by one.
  const verdicts = (s) => {
    const vol = s['client-volume'];
    const succ = s['client-success'];
    const dur = s['client-duration'];
    const src = s['by-source-volume'];
    const ver = s['by-version-volume'];
    return [
      [`${tag}: it is the page of ${cfg.service}`, s.title === cfg.service, s.title],
      [`${tag}: the client request volume graph is drawn with data (req/s > 0)`,
        drawn(vol, 3) && vol.series[0].values.some((v) => v > 0), vol],
      [`${tag}: the success-rate graph is drawn, values between 0 and 1, dips under chaos`,
        drawn(succ, 3) && succ.series[0].values.every((v) => v >= 0 && v <= 1) &&
        succ.series[0].values.some((v) => v < 1), succ],
      [`${tag}: the duration graph draws P50, P90 and P99; P99 has data`,
        drawn(dur, 3) && ['P50', 'P90', 'P99'].every((n) => dur.legend.includes(n)) &&
        p99(s) && p99(s).values.length >= 3 && p99(s).values.every((v) => v > 0), dur],
      [`${tag}: requests by source name the gateway's workload`,
        drawn(src, 1) && src.legend.some((l) => l.startsWith('istio-ingressgateway.')), src.legend],
      [`${tag}: requests by destination version name apigateway-v1 v1`,
        drawn(ver, 1) && ver.legend.some((l) => l.startsWith('apigateway-v1 v1 ')), ver.legend],
    ];
  };
  const ready = (s) => verdicts(s).every((v) => v[1]);
  const s = await until(page, url, probe, ready, deadline);
  page.off('response', onResponse);
  for (const [name, ok, detail] of verdicts(s)) {
    check(name, ok, detail);
  }
  check(`${tag}: every asset and query the page loads answers` +
    (missing.size ? ' (Debian\'s paths aside, which the library falls back from)' : ''),
    failed.length === 0, failed);
  await page.screenshot({ path: path.join(cfg.artifacts, `service-${prom.name}.png`) });
  await page.screenshot({ path: path.join(cfg.artifacts, `service-${prom.name}-full.png`), fullPage: true });
}

async function meshPage(page, prom, deadline) {
  const url = `${prom.url}/consoles/skiff-mesh.html`;
  const probe = () => page.evaluate((fn) => {
    const inspect = new Function(`return (${fn})`)();
    return {
      volume: inspect('mesh-volume'),
      share: inspect('mesh-gateway-share'),
      services: Array.from(document.querySelectorAll('#mesh-services tr.mesh-service td:first-child'))
        .map((td) => td.textContent.trim()),
    };
  }, inspectGraph.toString());
  const want = [cfg.service, 'catalog.coolstore.svc.cluster.local'];
  const verdicts = (s) => [
    [`Mesh page (${prom.name}): the volume graph draws every service`,
      drawn(s.volume, 3) && want.every((w) => s.volume.legend.includes(w)), s.volume],
    [`Mesh page (${prom.name}): the table lists every service`,
      want.every((w) => s.services.includes(w)), s.services],
    [`Mesh page (${prom.name}): the gateway's share is drawn, between 0 and 1`,
      drawn(s.share, 3) && s.share.series[0].values.every((v) => v > 0 && v <= 1), s.share],
  ];
  const s = await until(page, url, probe, (st) => verdicts(st).every((v) => v[1]), deadline);
  for (const [name, ok, detail] of verdicts(s)) {
    check(name, ok, detail);
  }
  await page.screenshot({ path: path.join(cfg.artifacts, `mesh-${prom.name}.png`), fullPage: true });
}

async function zipkin(page, deadline) {
  // As a user would: service = the gateway, Run query, open the first trace.
  const gateway = cfg.gatewayService;
  let text = '';
  let opened = false;
  while (Date.now() < deadline && !opened) {
    await page.goto(`${cfg.zipkin}/zipkin/?serviceName=${gateway}&lookback=900000&limit=10`);
    await page.getByRole('button', { name: /run query/i }).click();
    const first = page.locator('a[href^="/zipkin/traces/"]').first();
    try {
      await first.waitFor({ timeout: 15000 });
    } catch (e) {
      await sleep(2000);
      continue;
    }
    await page.screenshot({ path: path.join(cfg.artifacts, 'zipkin-search.png') });
    await first.click();
    await page.waitForURL(/\/zipkin\/traces\/[0-9a-f]+/, { timeout: 15000 });
    try {
      await page.getByText(`${gateway}: ${cfg.service}:8080/*`).first().waitFor({ timeout: 15000 });
    } catch (e) {
      // Checked below with what the page shows.
    }
    text = await page.evaluate(() => document.body.innerText);
    opened = true;
  }
  check('Zipkin: searching by the gateway\'s service finds traces and opens one', opened, text.slice(0, 500));
  check('Zipkin: the trace has the gateway\'s span (to apigateway)',
    text.includes(`${gateway}: ${cfg.service}:8080/*`), text.slice(0, 1500));
  check('Zipkin: and the apigateway sidecar\'s span (to catalog)',
    text.includes('apigateway.coolstore: catalog.coolstore.svc.cluster.local:8080/*'),
    text.slice(0, 1500));
  await page.screenshot({ path: path.join(cfg.artifacts, 'zipkin-trace.png') });
}

(async () => {
  fs.mkdirSync(cfg.artifacts, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 760 },
    args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const page = await context.newPage();
    // Each page may wait this long for its data (the first one for the first scrapes).
    const deadline = () => Date.now() + cfg.timeout * 1000;
    for (const prom of cfg.prometheus) {
      await servicePage(page, prom, deadline());
      await meshPage(page, prom, deadline());
    }
    await zipkin(page, deadline());
  } catch (e) {
    check('browser', false, String(e && e.stack || e));
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(`${results.passed} passed, ${results.failed} failed`);
  process.exit(results.failed ? 1 : 0);
})();
