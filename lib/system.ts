import { callNative } from './errors';
import { getBinding } from './native/binding';
import type { NativeDeviceInfo } from './native/contract';

export type DeviceInfo = NativeDeviceInfo;

export interface SystemInfo {
  /** Commit of the llama.cpp source this addon was built from. */
  llamaCppCommit: string;
  /** Which native binary was loaded ('cpu', 'cuda', ...) and from where. */
  binary: { variant: string; path: string };
  /** Every ggml device this build can use, CPU included. */
  backends: DeviceInfo[];
  /** CPU features that ggml's CPU backend was built with and detected (e.g. AVX2: '1'). */
  cpuFeatures: Record<string, string>;
  /**
   * Which build of ggml's CPU backend runs: the package ships one per x86-64 generation ('haswell',
   * 'skylakex', 'icelake', 'zen4', ...) and loads the best this CPU can run; 'built in' for a binary
   * compiled for one machine (a source build).
   */
  cpuVariant: string;
  /** Threads used when none are given: the number of physical cores. */
  defaultThreads: number;
  logicalCpus: number;
}

/** Describes the native build and the devices it sees. Device enumeration runs off the JS thread. */
export async function systemInfo(): Promise<SystemInfo> {
  const { binding, file, variant } = getBinding();
  const info = await callNative(() => binding.systemInfo());
  return { ...info, binary: { variant, path: file } };
}
