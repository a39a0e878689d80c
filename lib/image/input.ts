/**
 * Image inputs: a file path, encoded bytes (JPEG, PNG, BMP, GIF), raw pixels, or an embedding that
 * encodeImage() returned. Resolved here into what the addon takes.
 */
import fs from 'node:fs';
import { invalidArgument, PaliGemmaError } from '../errors';
import type { NativeImage } from '../native/contract';

export type { NativeImage };

/** Raw 8-bit pixels, row major: from sharp (`.raw()`), canvas `ImageData`, Electron `nativeImage`... */
export interface RawImage {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** 1 (gray), 3 (RGB) or 4 (RGBA; alpha is dropped, as PIL's convert('RGB') does). */
  channels: 1 | 3 | 4;
}

/** The projector output for one image (before the 1/sqrt(width) merge scaling). */
export class ImageEmbedding {
  /** tokens x dim values, row major. */
  readonly data: Float32Array;
  readonly tokens: number;
  readonly dim: number;

  constructor(data: Float32Array, tokens: number, dim: number) {
    if (!(data instanceof Float32Array) || data.length !== tokens * dim) {
      throw invalidArgument('ImageEmbedding', `a Float32Array of ${tokens} x ${dim} values`, data);
    }
    this.data = data;
    this.tokens = tokens;
    this.dim = dim;
  }
}

export type ImageInput = string | Uint8Array | ArrayBuffer | RawImage | ImageEmbedding;

/** Pixels of a decoded image are limited to this many (checked before decoding). */
export const MAX_IMAGE_PIXELS = 100_000_000;

function isRaw(v: object): v is RawImage {
  return 'data' in v && 'width' in v && 'height' in v && 'channels' in v;
}

/** @internal */
export async function resolveImage(image: unknown, name = 'image'): Promise<NativeImage> {
  if (typeof image === 'string') {
    if (!image) throw invalidArgument(name, 'a file path, image bytes, raw pixels or an ImageEmbedding', image);
    try {
      return { bytes: await fs.promises.readFile(image), label: image };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${image}: ${code === 'ENOENT' ? 'no such file' : `cannot read (${code})`}`, { cause: err });
    }
  }
  if (image instanceof ImageEmbedding) return { embedding: image.data, tokens: image.tokens, dim: image.dim };
  if (image instanceof ArrayBuffer) return { bytes: new Uint8Array(image) };
  if (image instanceof Uint8Array) {
    if (image.byteLength === 0) throw new PaliGemmaError('ERR_INVALID_IMAGE', `${name}: the image buffer is empty`);
    return { bytes: image };
  }
  if (typeof image === 'object' && image !== null) {
    const o = image as Record<string, unknown>;
    if (o.data instanceof Float32Array && typeof o.tokens === 'number' && typeof o.dim === 'number') {
      return { embedding: o.data, tokens: o.tokens, dim: o.dim };
    }
    if (isRaw(image)) {
      const { data, width, height, channels } = image;
      if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) throw invalidArgument(`${name}.data`, 'a Uint8Array or Uint8ClampedArray', data);
      if (!Number.isInteger(width) || width <= 0) throw invalidArgument(`${name}.width`, 'a positive integer', width);
      if (!Number.isInteger(height) || height <= 0) throw invalidArgument(`${name}.height`, 'a positive integer', height);
      if (channels !== 1 && channels !== 3 && channels !== 4) throw invalidArgument(`${name}.channels`, '1, 3 or 4', channels);
      if (width * height > MAX_IMAGE_PIXELS) {
        throw new PaliGemmaError('ERR_INVALID_IMAGE', `${name}: ${width}x${height} is over the limit of ${MAX_IMAGE_PIXELS / 1e6} megapixels`);
      }
      if (data.length !== width * height * channels) {
        throw invalidArgument(`${name}.data`, `${width}*${height}*${channels} = ${width * height * channels} bytes`, `${data.length} bytes`);
      }
      return { pixels: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height, channels };
    }
  }
  throw invalidArgument(
    name,
    'a file path, a Buffer/Uint8Array of JPEG/PNG/BMP/GIF bytes, raw pixels { data, width, height, channels } or an ImageEmbedding',
    image,
  );
}
