/**
 * @huggingface/hub, loaded on first use: it takes a few hundred milliseconds to load, which every
 * CLI command and `require('paligemma-node')` would otherwise pay.
 */
import type * as HF from '@huggingface/hub';

let loaded: typeof HF | undefined;

export function hfHub(): typeof HF {
  loaded ??= require('@huggingface/hub') as typeof HF;
  return loaded;
}
