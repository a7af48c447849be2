#!/usr/bin/env node
// Load workflows into a running ComfyUI page (headless /usr/bin/chromium through playwright-core) and report, as
// one JSON line, for each: the node types the page does not know, the API prompt the page makes of the graph
// (app.graphToPrompt), and a screenshot.
// Usage: node scripts/check_workflows_in_browser.js URL OUT_DIR SOURCE...
//   SOURCE = template:PACK/NAME (fetched from the server's /api/workflow_templates) or a path to a UI-format JSON.
const fs = require('fs');
const path = require('path');
const { chromium } = require(path.join(__dirname, '..', '.host', 'node', 'node_modules', 'playwright-core'));

async function workflowFor(page, source) {
  if (source.startsWith('template:')) {
    const rel = source.slice('template:'.length);
    return page.evaluate(async (r) => (await fetch(`/api/workflow_templates/${r}.json`)).json(), rel);
  }
  return JSON.parse(fs.readFileSync(source, 'utf8'));
}

(async () => {
  const [url, outDir, ...sources] = process.argv.slice(2);
  fs.mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const results = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url, { timeout: 90000 });
    await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph &&
      Object.keys(window.LiteGraph.registered_node_types || {}).length > 0, null, { timeout: 90000 });
    for (const source of sources) {
      const name = path.basename(source).replace(/\.json$/, '');
      const workflow = await workflowFor(page, source);
      const result = await page.evaluate(async (data) => {
        await window.app.loadGraphData(data);
        const nodes = window.app.graph.nodes || window.app.graph._nodes;
        const missing = nodes.map((n) => n.type).filter((t) => !window.LiteGraph.registered_node_types[t]);
        let prompt = null;
        let promptError = null;
        try {
          prompt = (await window.app.graphToPrompt()).output;
        } catch (e) {
          promptError = String(e);
        }
        return { nodes: nodes.length, missing, prompt, promptError };
      }, workflow);
      await page.waitForTimeout(500);
      const shot = path.join(outDir, `${name}.png`);
      await page.screenshot({ path: shot });
      result.screenshot = shot;
      results[name] = result;
    }
    results._pageErrors = errors;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(results));
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
