/**
 * PaliGemma's structured outputs: `<loc>` boxes and `<seg>` mask codes.
 *
 * Boxes: four `<locNNNN>` tokens, y1 x1 y2 x2, each a bin of 1024 over the image side. A bin maps to
 * pixels as `bin / 1024 * size`, as the official demo and model cards do (big_vision divides by 1023;
 * the two differ by under 0.1% of the image size).
 */

export interface Box {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

/** Whole pixels covering a box, inside the image: what `sharp(...).extract(region)` takes. */
export interface Region {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface Location {
  label: string;
  box: Box;
  /** The box rounded outwards to whole pixels. */
  region: Region;
  /** The 16 mask codes (a 4x4 grid, row-major) when the group has them. */
  seg?: number[];
}

const GROUP = /((?:<loc\d{4}>){4})\s*((?:<seg\d{3}>){16})?\s*([^;<>]*)/g;
const LOC = /<loc(\d{4})>/g;
const SEG = /<seg(\d{3})>/g;

/**
 * Parses detection/segmentation output: groups of `<loc>`x4 [`<seg>`x16] [label] separated by ` ; `.
 * Junk, partial groups, out-of-range tokens and boxes without area are skipped, never thrown. Boxes
 * are in pixels of a `width` x `height` image and ordered (x1 < x2, y1 < y2); bins stop at 1023, so
 * every box lies inside the image.
 */
/** The smallest whole-pixel rectangle holding `box`, clipped to the image (at least 1x1). */
export function pixelRegion(box: Box, width: number, height: number): Region {
  const left = Math.min(Math.max(0, Math.floor(box.x1)), width - 1);
  const top = Math.min(Math.max(0, Math.floor(box.y1)), height - 1);
  const right = Math.max(left + 1, Math.min(width, Math.ceil(box.x2)));
  const bottom = Math.max(top + 1, Math.min(height, Math.ceil(box.y2)));
  return { left, top, width: right - left, height: bottom - top };
}

export function parseLocations(text: string, size: { width: number; height: number }): Location[] {
  if (typeof text !== 'string') return [];
  const { width, height } = size;
  const out: Location[] = [];
  for (const m of text.matchAll(GROUP)) {
    const bins = [...m[1]!.matchAll(LOC)].map((x) => Number(x[1]));
    if (bins.some((b) => b > 1023)) continue;
    let [y1, x1, y2, x2] = [(bins[0]! / 1024) * height, (bins[1]! / 1024) * width, (bins[2]! / 1024) * height, (bins[3]! / 1024) * width];
    if (y1 > y2) [y1, y2] = [y2, y1];
    if (x1 > x2) [x1, x2] = [x2, x1];
    if (y1 === y2 || x1 === x2) continue; // no area: big_vision's evaluator drops these too
    const loc: Location = {
      label: m[3]!.trim(),
      box: { x1, y1, x2, y2 },
      region: pixelRegion({ x1, y1, x2, y2 }, width, height),
    };
    if (m[2]) {
      const codes = [...m[2].matchAll(SEG)].map((x) => Number(x[1]));
      if (codes.every((c) => c < 128)) loc.seg = codes;
    }
    out.push(loc);
  }
  return out;
}
