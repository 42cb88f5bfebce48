// The kinds of guest this node can run, each by its driver. In this order a guest's name is looked
// up when its kind is not known (status, sessions).
import type { GuestKind } from '../guest-definition.js';
import type { DriverContext, GuestDriver } from '../guest-driver.js';
import { createLxcDriver } from './lxc.js';
import { createQemuDriver } from './qemu.js';

export const GUEST_DRIVERS: Readonly<Record<GuestKind, (context: DriverContext) => GuestDriver>> = {
  qemu: createQemuDriver,
  lxc: createLxcDriver,
};

export const GUEST_KINDS = Object.keys(GUEST_DRIVERS) as readonly GuestKind[];
