#!/usr/bin/env node
// Open a running ComfyUI page in headless /usr/bin/chromium through playwright-core and print, as one JSON line,
// whether the frontend app came up and which node types it registered (ours: FusionFrames*).
// Usage: node scripts/comfy_page_probe.js http://127.0.0.1:PORT/ [timeout_ms]
// playwright-core comes from `scripts/install_browser.sh --playwright` (.host/node/); it never downloads a browser.
const path = require('path');
const { chromium } = require(path.join(__dirname, '..', '.host', 'node', 'node_modules', 'playwright-core'));

(async () => {
  const url = process.argv[2] || 'http://127.0.0.1:8188/';
  const timeout = Number(process.argv[3] || 60000);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url, { timeout });
    // The graph canvas exists once the app has loaded the node definitions from /object_info.
    await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph &&
      Object.keys(window.LiteGraph.registered_node_types || {}).length > 0, null, { timeout });
    const info = await page.evaluate(() => {
      const types = Object.keys(window.LiteGraph.registered_node_types);
      return {
        app: typeof window.app,
        nodeTypes: types.length,
        packNodes: types.filter((t) => t.startsWith('FusionFrames')).sort(),
        graphNodes: window.app.graph.nodes ? window.app.graph.nodes.length : null,
        title: document.title,
      };
    });
    info.pageErrors = errors;
    console.log(JSON.stringify(info));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
