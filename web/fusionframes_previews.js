// FusionFrames live previews on the canvas: plays the frames of the video being sampled on the node that samples it.
//
// The server (nodes/comfy/previews.py) sends, before each preview picture of a FusionFrames video, the JSON event
// "fusionframes.preview" {node, frames, columns, rows, fps, source}: the picture is a sheet of `frames` frames in a
// grid of `columns` x `rows`. For such a node this extension takes the picture instead of the page's still preview
// and plays the sheet's frames, in order, in a canvas widget on the node; the next picture replaces the frames and the
// playing goes on. The player leaves the node when the node runs again or is removed. Pictures of other nodes, and of
// our nodes when the server sent no layout, go to the page as before.
//
// Written against the ComfyUI frontend 1.32 (ComfyUI 0.3.75): app.registerExtension, api events, node.addDOMWidget.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EVENT = "fusionframes.preview";
const WIDGET = "fusionframes_preview";

// display node id -> player; kept on window for scripts and tests that look at what the canvas plays
const players = new Map();
const layouts = new Map(); // display node id -> the layout announced for its next picture
window.FusionFramesPreviews = players;

function findNode(displayId) {
  // "12" or a subgraph path "5:12": the node inside the subgraph of each parent
  let graph = app.graph;
  let node = null;
  for (const part of String(displayId).split(":")) {
    node = graph?.getNodeById?.(Number.isNaN(Number(part)) ? part : Number(part)) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

class Player {
  constructor(node, displayId) {
    this.node = node;
    this.displayId = displayId;
    this.canvas = document.createElement("canvas");
    this.canvas.style.width = "100%";
    this.canvas.style.objectFit = "contain";
    this.sheet = null;
    this.layout = null;
    this.index = 0;
    this.shown = 0; // frames drawn so far (tests check that playing goes on)
    this.pictures = 0;
    this.timer = null;
    this.widget = node.addDOMWidget(WIDGET, "fusionframes_preview", this.canvas, { serialize: false, hideOnZoom: false });
    this.widget.computeSize = (width) => {
      const aspect = this.layout && this.sheet
        ? (this.sheet.height / this.layout.rows) / (this.sheet.width / this.layout.columns) : 1;
      return [width, Math.max(64, Math.round((width - 20) * aspect))];
    };
    const removed = node.onRemoved;
    node.onRemoved = (...args) => {
      this.stop();
      return removed?.apply(node, args);
    };
  }

  show(sheet, layout) {
    const resized = !this.sheet || !this.layout || layout.columns !== this.layout.columns
      || layout.rows !== this.layout.rows || sheet.width !== this.sheet.width || sheet.height !== this.sheet.height;
    this.sheet?.close?.();
    this.sheet = sheet;
    this.layout = layout;
    this.pictures += 1;
    this.canvas.width = Math.max(1, Math.floor(sheet.width / layout.columns));
    this.canvas.height = Math.max(1, Math.floor(sheet.height / layout.rows));
    if (resized) {
      const size = this.node.computeSize?.();
      if (size) this.node.setSize([Math.max(this.node.size[0], size[0]), Math.max(this.node.size[1], size[1])]);
    }
    this.draw();
    const interval = 1000 / Math.max(1, layout.fps || 8);
    if (this.timer === null || this.interval !== interval) {
      clearInterval(this.timer);
      this.interval = interval;
      this.timer = setInterval(() => this.next(), interval);
    }
  }

  next() {
    if (!this.node.graph) {  // the node left the canvas (another workflow was opened)
      this.stop();
      return;
    }
    if (!this.layout) return;
    this.index = (this.index + 1) % this.layout.frames;
    this.draw();
  }

  draw() {
    const { sheet, layout, canvas } = this;
    if (!sheet || !layout) return;
    const index = this.index % layout.frames;
    const column = index % layout.columns;
    const row = Math.floor(index / layout.columns);
    const context = canvas.getContext("2d");
    context.drawImage(sheet, column * canvas.width, row * canvas.height, canvas.width, canvas.height,
      0, 0, canvas.width, canvas.height);
    this.shown += 1;
    this.node.setDirtyCanvas?.(true, false);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.sheet?.close?.();
    this.sheet = null;
    const widgets = this.node.widgets || [];
    const at = widgets.indexOf(this.widget);
    if (at >= 0) {
      this.widget.onRemove?.();
      widgets.splice(at, 1);
    }
    this.canvas.remove();
    players.delete(this.displayId);
    this.node.setDirtyCanvas?.(true, true);
  }
}

async function play(displayId, blob, layout) {
  const node = findNode(displayId);
  if (!node) return;
  const sheet = await createImageBitmap(blob);
  let player = players.get(displayId);
  if (!player || player.node !== node) {
    player?.stop();
    player = new Player(node, displayId);
    players.set(displayId, player);
  }
  player.show(sheet, layout);
}

function takePicture(event) {
  const { blob, displayNodeId, nodeId } = event.detail || {};
  const id = String(displayNodeId ?? nodeId);
  const layout = layouts.get(id);
  if (!layout || !blob) return;
  layouts.delete(id);
  event.stopImmediatePropagation();
  play(id, blob, layout).catch((error) => console.warn("FusionFrames preview:", error));
}

// Registered when the page imports the extension, which is before the page adds its own preview handler: listeners
// of an event run in the order they were added, so the pictures we play never reach the page's still preview.
api.addEventListener("b_preview_with_metadata", takePicture);

app.registerExtension({
  name: "FusionFrames.Previews",
  setup() {
    api.addEventListener(EVENT, ({ detail }) => {
      if (detail && detail.node != null && detail.frames > 0) layouts.set(String(detail.node), detail);
    });
    api.addEventListener("executing", ({ detail }) => {
      // a node that starts again begins without the last run's player
      const id = detail == null ? null : String(typeof detail === "object" ? detail.node ?? detail.display_node : detail);
      if (id !== null && players.has(id)) players.get(id).stop();
    });
  },
});
