#!/usr/bin/env node
// Queue an API-format graph from a running ComfyUI page (headless /usr/bin/chromium through playwright-core) and
// watch the pack's live-preview player (web/fusionframes_previews.js) on the node NODE_ID while the graph runs.
// Reports, as one JSON line: the page errors, whether the run ended, and what the player showed: how many preview
// pictures it got, the layout of the last one, how many frames it drew, and a fingerprint of its canvas sampled
// every 60 ms (the frames differ, so a player that plays shows several fingerprints between two pictures).
// Usage: node scripts/check_previews_in_browser.js URL API_GRAPH.json NODE_ID OUT.png
const fs = require('fs');
const path = require('path');
const { chromium } = require(path.join(__dirname, '..', '.host', 'node', 'node_modules', 'playwright-core'));

(async () => {
  const [url, graphFile, nodeId, shot] = process.argv.slice(2);
  const graph = JSON.parse(fs.readFileSync(graphFile, 'utf8'));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  let result;
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url, { timeout: 90000 });
    await page.waitForFunction(() => window.app && window.app.graph && window.FusionFramesPreviews &&
      Object.keys(window.LiteGraph.registered_node_types || {}).length > 0, null, { timeout: 90000 });
    result = await page.evaluate(async ([data, id]) => {
      const { app } = window;
      const { api } = await import('/scripts/api.js');
      await app.loadApiJson(data, 'previews.json');
      let ended = null;
      const done = new Promise((resolve) => {
        for (const name of ['execution_success', 'execution_error', 'execution_interrupted']) {
          api.addEventListener(name, () => { ended = name; resolve(); });
        }
      });
      const passed = [];  // pictures the page itself got (not taken by the player)
      api.addEventListener('b_preview_with_metadata', ({ detail }) => passed.push(String(detail.displayNodeId)));
      await app.queuePrompt(0, 1);
      const fingerprint = (canvas) => {
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let hash = 0;
        for (let i = 0; i < pixels.length; i += 7) hash = (hash * 31 + pixels[i]) >>> 0;
        return hash;
      };
      const fingerprints = [];
      let last = null;
      const started = Date.now();
      while (ended === null && Date.now() - started < 540000) {
        const player = window.FusionFramesPreviews.get(String(id));
        if (player && player.sheet) {
          fingerprints.push(fingerprint(player.canvas));
          last = { pictures: player.pictures, shown: player.shown, layout: player.layout,
            canvas: [player.canvas.width, player.canvas.height],
            widgetOnNode: (player.node.widgets || []).includes(player.widget) };
        }
        await new Promise((r) => setTimeout(r, 60));
      }
      await Promise.race([done, new Promise((r) => setTimeout(r, 1000))]);
      // after the run the player keeps playing the last picture
      const player = window.FusionFramesPreviews.get(String(id));
      const after = [];
      for (let i = 0; player && player.sheet && i < 12; i++) {
        after.push(fingerprint(player.canvas));
        await new Promise((r) => setTimeout(r, 70));
      }
      return { ended, last, fingerprints: fingerprints.length, distinctWhileRunning: new Set(fingerprints).size,
        distinctAfter: new Set(after).size, passedToPage: passed, nativePreview: (app.nodePreviewImages || {})[String(id)] ?? null };
    }, [graph, nodeId]);
    await page.screenshot({ path: shot });
    result.pageErrors = errors;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
