/** How many slivers the API benchmark's database holds (the servers and the driver agree on it). */
export const BENCH_SLIVERS = 1000;
