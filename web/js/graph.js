// graph.js: a dag drawn as a graph: nodes are steps, edges run from each
// step to the steps that are after it. Layout by dagre (vendored, loaded
// only here); drawing as SVG built node by node (no markup strings).
import { s } from './dom.js';

const W = 150, H = 34;

/** nodes: [{id, status}], edges: [[from, to]] -> an <svg> */
export async function drawGraph(nodes, edges) {
  const { default: dagre } = await import('../vendor/dagre/dagre.esm.js');
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 18, ranksep: 46, marginx: 10, marginy: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: W, height: H });
  for (const [a, b] of edges) if (g.hasNode(a) && g.hasNode(b)) g.setEdge(a, b);
  dagre.layout(g);
  const { width, height } = g.graph();
  const svg = s('svg', {
    class: 'dag',
    viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, width: Math.ceil(width), height: Math.ceil(height),
    role: 'img', 'aria-label': `graph of ${nodes.length} steps and ${edges.length} dependencies`,
  });
  svg.append(s('defs', null, s('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }))));
  for (const e of g.edges()) {
    const pts = g.edge(e).points;
    const d = pts.map((p, i) => `${i ? 'L' : 'M'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ');
    svg.append(s('path', { d, class: 'edge', 'marker-end': 'url(#arrow)', dataset: { from: e.v, to: e.w } }));
  }
  for (const n of nodes) {
    const p = g.node(n.id);
    const label = n.id.length > 20 ? `${n.id.slice(0, 19)}…` : n.id;
    svg.append(s('g', { class: `node st-${n.status || 'none'}`, dataset: { node: n.id }, transform: `translate(${p.x - W / 2},${p.y - H / 2})` },
      s('title', null, `${n.id}: ${n.status || 'not run'}`),
      s('rect', { width: W, height: H, rx: 6 }),
      s('text', { x: W / 2, y: H / 2 + 4, 'text-anchor': 'middle' }, label)));
  }
  return svg;
}
