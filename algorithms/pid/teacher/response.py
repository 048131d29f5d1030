"""Photon- and hit-level response of the reference detector (teacher) — not LHCb data.

One numba kernel loops over tracks; every random number is ``counter_uniform(key, event, index,
draw)`` with a fixed draw-index layout per track, so a track's response depends only on its own
inputs and (key, event number, index within the event) — never on the batch it is in.

Draw layout (uniform draw indices; a normal with index d consumes uniforms 2d and 2d+1 and all normal
indices are >= NORMAL_BASE so the two ranges never overlap):

==========================  =====================================================
uniforms 0..9               decay in flight: 0 distance, 1 branching, 2 cos theta*, 3 phi*, 4 kink veto, 5 loss of both rings,
                            6 survival against a hadronic interaction inside the calorimeter
uniforms 100000*(r+1) + ...  RICH radiator r: +0 ring degradation, +1 Poisson signal, +2 Poisson background, +3 direction tail,
                             +4 surviving fraction of a degraded ring,
                             +1000+j background photon j, +50000+j azimuth of signal photon j
uniforms 300000 + ...        muon: +0 straggling-free punch-through depth, +10+s station efficiency,
                             +20+s random hit, +30+s / +40+s random-hit x / y, +50+s / +60+s pad
normals NORMAL_BASE + ...    RICH r: 100000*(r+1) + 0 / +50000 track direction x / y, +1+j signal photon j;
                             muon: 300000 + 0 straggling, +1+k / +11+k MS angle x / y of absorber k,
                             +20+s / +30+s punch-through residual x / y
==========================  =====================================================
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from framework.random import counter_uniform

from . import constants as C

NORMAL_BASE = 1 << 24
_SQRT2PI = math.sqrt(2.0 * math.pi)


@nb.njit(cache=True, inline="always")
def _u(key, ev, idx, d):
    return counter_uniform(key, ev, idx, d)


@nb.njit(cache=True)
def _n(key, ev, idx, d):
    dd = NORMAL_BASE + d
    u1 = counter_uniform(key, ev, idx, 2 * dd)
    u2 = counter_uniform(key, ev, idx, 2 * dd + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@nb.njit(cache=True)
def _poisson(lam, u):
    """Poisson draw by inversion of one uniform (exact; lam is at most a few hundred here)."""
    if lam <= 0.0:
        return 0
    lam = min(lam, 600.0)  # keeps exp(-lam) finite; never reached with the occupancies used
    k = 0
    prob = math.exp(-lam)
    cdf = prob
    while u > cdf and k < 5000:
        k += 1
        prob *= lam / k
        cdf += prob
    return k


@nb.njit(cache=True)
def _highland(p, x0):
    return 13.6 / p * math.sqrt(x0) * (1.0 + 0.038 * math.log(x0))


@nb.njit(cache=True)
def _cos_theta(p, m, n):
    return math.sqrt(1.0 + (m / p) * (m / p)) / n


@nb.njit(cache=True)
def _lgamma_pdf(x, shape, scale):
    return (shape - 1.0) * math.log(x) - x / scale - math.lgamma(shape) - shape * math.log(scale)


@nb.njit(cache=True)
def _ndtr(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@nb.njit(cache=True)
def teacher_kernel(species, p, x, y, z, tx, ty, qop, ntracks, zprod, events, indices, key,
                   masses, ctaus, n_minus_1, npe_sat, sigma_ph, sigma_trk, ms_trk, trk_tail_frac, trk_tail_scale, bkg_per_track,
                   ring_loss, ring_loss_both, bkg_floor, z_rich, acc_inner, acc_outer_x, acc_outer_y,
                   z_muon, p_reach, straggling, station_eff, abs_z, abs_x0, abs_lambda,
                   pad_x1, pad_y1, r1_half_x, r1_half_y, foi_nsigma, hits_per_pad, ntracks_ref,
                   punch_lambda, punch_slope, br_munu, z_calo, kink_tol, z_t_end, z_kick, pt_kick,
                   mu_acc_inner_x, mu_acc_inner_y, mu_acc_outer_x, mu_acc_outer_y,
                   bkg_theta_ref, calo_depth, calo_lambda_mm,
                   loglik, has_rich, in_rich, n_sig, n_bkg,
                   in_muon_acc, is_muon, muon_mu_ll, muon_bkg_ll, muon_term, n_muon_hits, decayed):
    n_tr = species.shape[0]
    m_mu = masses[1]
    nh = masses.shape[0]
    n_st = z_muon.shape[0]
    n_abs = abs_z.shape[0]
    for i in range(n_tr):
        s = species[i]
        ev = events[i]
        ix = indices[i]
        pp = p[i]
        m = masses[s]
        ds = math.sqrt(1.0 + tx[i] * tx[i] + ty[i] * ty[i])
        charge_sign = 1.0 if qop[i] > 0 else -1.0
        # ---------------------------------------------------------------- decay in flight
        z_dec = 1e30
        p_mu = 0.0
        kink = 0.0
        phi_k = 0.0
        dec_mu = False
        if not math.isinf(ctaus[s]) and s != 1:
            lam = pp / m * ctaus[s]
            ell = -lam * math.log(_u(key, ev, ix, 0))
            z_dec = zprod[i] + ell / ds
            br = br_munu[s]
            # a hadron decays to a muon upstream of the calorimeter, or inside it before its first
            # hadronic interaction (probability exp(-depth / lambda_I) of surviving to that depth)
            reach = z_dec < z_calo
            if not reach and z_dec < z_calo + calo_depth:
                reach = _u(key, ev, ix, 6) < math.exp(-(z_dec - z_calo) / calo_lambda_mm)
            if reach and _u(key, ev, ix, 1) < br:
                dec_mu = True
                e_tot = math.sqrt(pp * pp + m * m)
                gam = e_tot / m
                bet = pp / e_tot
                pstar = (m * m - m_mu * m_mu) / (2.0 * m)
                estar = math.sqrt(pstar * pstar + m_mu * m_mu)
                ct = 2.0 * _u(key, ev, ix, 2) - 1.0
                st = math.sqrt(max(0.0, 1.0 - ct * ct))
                p_par = gam * (pstar * ct + bet * estar)
                p_perp = pstar * st
                p_mu = math.sqrt(p_par * p_par + p_perp * p_perp)
                kink = math.atan2(p_perp, p_par)
                phi_k = 2.0 * math.pi * _u(key, ev, ix, 3)
                if p_par <= 0.0:
                    p_mu = 0.0
                # a decay inside the tracking volume leaves a kink: the track is reconstructed only
                # if the kink is small (probability exp(-visible kink / kink_tol)).  Upstream of the
                # magnet the bending-plane (x) component of the kink is indistinguishable from a
                # momentum change and is absorbed by the fit: only the y component is visible there.
                # Between the magnet and the last T station both components are visible.  The teacher
                # is conditioned on a reconstructed track, so vetoed decays are treated as no decay.
                if z_dec < z_t_end:
                    vis = kink
                    if z_dec < z_kick:
                        vis = abs(math.tan(kink) * math.sin(phi_k))
                    if _u(key, ev, ix, 4) > math.exp(-vis / kink_tol):
                        dec_mu = False
        decayed[i] = dec_mu
        # ---------------------------------------------------------------- RICH
        any_rich = False
        for h in range(nh):
            loglik[i, h] = 0.0
        # an upstream hadronic interaction / shared-ring confusion that spoils both rings
        lost_both = _u(key, ev, ix, 5) < ring_loss_both
        for r in range(2):
            zm = z_rich[r]
            # position at the radiator middle (straight line, kick for RICH2)
            if zm <= z_kick:
                xr = x[i] + tx[i] * (zm - z[i])
            else:
                xr = x[i] + tx[i] * (z_kick - z[i]) + (tx[i] + pt_kick * qop[i]) * (zm - z_kick)
            yr = y[i] + ty[i] * (zm - z[i])
            ax = abs(xr) / zm
            ay = abs(yr) / zm
            inside = ax < acc_outer_x[r] and ay < acc_outer_y[r] and (ax * ax + ay * ay) > acc_inner[r] ** 2
            in_rich[i, r] = inside
            if not inside:
                n_sig[i, r] = 0
                n_bkg[i, r] = 0
                continue
            any_rich = True
            n = 1.0 + n_minus_1[r]
            th_max = math.acos(1.0 / n)
            s2max = math.sin(th_max) ** 2
            n0 = npe_sat[r] * ds / s2max
            # emitter: the hadron, or its decay muon if it decayed upstream of the radiator middle
            pe = pp
            me = m
            if dec_mu and z_dec < zm:
                pe = p_mu
                me = m_mu
            base_u = 100000 * (r + 1)
            lost = _u(key, ev, ix, base_u) < ring_loss[r]
            mu_true = 0.0
            th_true = 0.0
            if pe > 0.0:
                ct = _cos_theta(pe, me, n)
                if ct < 1.0:
                    th_true = math.acos(ct)
                    mu_true = n0 * math.sin(th_true) ** 2
            if lost_both:
                mu_true = 0.0
            elif lost:
                # degraded ring: the track stops radiating at a uniform depth of the radiator (hadronic
                # interaction inside it), a loss the reconstruction's expected yields do not know about
                mu_true *= _u(key, ev, ix, base_u + 4)
            nsig = _poisson(mu_true, _u(key, ev, ix, base_u + 1))
            s_trk = math.sqrt(sigma_trk[r] ** 2 + (ms_trk[r] / pp) ** 2)
            s_tot = math.sqrt(sigma_ph[r] ** 2 + s_trk * s_trk)
            th_w = th_max + 5.0 * s_tot
            # photons of the other tracks' rings inside this track's ring window: the photon density
            # on the detector plane follows the track density, dN/dOmega ~ 1/theta^2, smoothed over
            # one ring radius (theta_max) near the beam.  bkg_per_track is the count at theta_ref.
            th_trk = math.sqrt(xr * xr + yr * yr) / zm
            dens = (bkg_theta_ref[r] / max(th_trk, th_max)) ** 2
            bexp = bkg_per_track[r] * ntracks[i] * dens + bkg_floor[r]
            nb_ = _poisson(bexp, _u(key, ev, ix, base_u + 2))
            n_sig[i, r] = nsig
            n_bkg[i, r] = nb_
            # hypotheses: expected yields and angles
            mu_h = np.zeros(nh)
            th_h = np.zeros(nh)
            for h in range(nh):
                ct = _cos_theta(pp, masses[h], n)
                if ct < 1.0:
                    th_h[h] = math.acos(ct)
                    mu_h[h] = n0 * math.sin(th_h[h]) ** 2
                loglik[i, h] += -mu_h[h] - bexp
            base_n = 100000 * (r + 1)
            # track-direction error at the radiator: a 2-D offset of the ring centre (dx, dy), common to
            # all photons of the ring.  A photon emitted at Cherenkov angle th_e and azimuth phi around
            # the true direction is reconstructed at |th_e (cos phi, sin phi) + (dx, dy)| from the
            # measured one: the offset broadens the ring azimuthally (by up to +-|d|), it does not shift
            # its mean radius (to first order).  s_trk is the spread per projection.
            dtrk = s_trk * _n(key, ev, ix, base_n)
            dtrk_y = s_trk * _n(key, ev, ix, base_n + 50000)
            if _u(key, ev, ix, base_u + 3) < trk_tail_frac:   # badly measured direction (tail)
                dtrk *= trk_tail_scale
                dtrk_y *= trk_tail_scale
            inv_w2 = 2.0 / (th_w * th_w)
            for j in range(nsig + nb_):
                if j < nsig:
                    th_e = th_true + sigma_ph[r] * _n(key, ev, ix, base_n + 1 + j)
                    phi_j = 2.0 * math.pi * _u(key, ev, ix, base_u + 50000 + j)
                    cx = th_e * math.cos(phi_j) + dtrk
                    cy = th_e * math.sin(phi_j) + dtrk_y
                    th = math.sqrt(cx * cx + cy * cy)
                else:
                    th = th_w * math.sqrt(_u(key, ev, ix, base_u + 1000 + (j - nsig)))
                if th <= 0.0 or th >= th_w:
                    continue
                bdens = bexp * th * inv_w2
                for h in range(nh):
                    sig = 0.0
                    if mu_h[h] > 0.0:
                        d = (th - th_h[h]) / s_tot
                        sig = mu_h[h] * math.exp(-0.5 * d * d) / (_SQRT2PI * s_tot)
                    loglik[i, h] += math.log(sig + bdens + 1e-300)
        has_rich[i] = any_rich
        # ---------------------------------------------------------------- MUON
        # acceptance at M2 and M3 (projective, w.r.t. the nominal interaction point)
        acc = True
        xs = np.empty(n_st)
        ys = np.empty(n_st)
        for st_i in range(n_st):
            zs = z_muon[st_i]
            xs[st_i] = x[i] + tx[i] * (z_kick - z[i]) + (tx[i] + pt_kick * qop[i]) * (zs - z_kick)
            ys[st_i] = y[i] + ty[i] * (zs - z[i])
            if st_i < 2:
                ax = abs(xs[st_i]) / zs
                ay = abs(ys[st_i]) / zs
                if ax > mu_acc_outer_x or ay > mu_acc_outer_y or (ax < mu_acc_inner_x and ay < mu_acc_inner_y):
                    acc = False
        in_muon_acc[i] = acc
        # what reaches the stations: 0 nothing, 1 a muon, 2 hadron-shower debris
        carrier = 0
        pm = 0.0
        if s == 1:
            carrier = 1
            pm = pp
        elif dec_mu:
            carrier = 1
            pm = p_mu
        elif s >= 2:
            carrier = 2
        depth_ok = np.zeros(n_st, dtype=nb.boolean)
        if carrier == 1 and pm > 0.0:
            f = 1.0 + straggling * _n(key, ev, ix, 300000)
            for st_i in range(n_st):
                depth_ok[st_i] = pm > p_reach[st_i] * f
        elif carrier == 2:
            lam_eff = max(0.3, punch_lambda * (1.0 + punch_slope * math.log(pp / 10000.0)))
            depth = -lam_eff * math.log(_u(key, ev, ix, 300000))
            cum = 0.0
            for st_i in range(n_st):
                for k in range(n_abs):
                    if abs_z[k] < z_muon[st_i] and (st_i == 0 or abs_z[k] > z_muon[st_i - 1]):
                        cum += abs_lambda[k]
                depth_ok[st_i] = depth > cum
        # expected spread (the reconstruction's view: track momentum pp)
        nfound = 0
        dsum = 0.0
        found = np.zeros(n_st, dtype=nb.boolean)
        occ = ntracks[i] / ntracks_ref
        msx = np.zeros(n_abs)
        msy = np.zeros(n_abs)
        if carrier == 1:
            for k in range(n_abs):
                loss_before = 0.0 if k == 0 else p_reach[k - 1]
                loss_here = p_reach[k] - loss_before
                pk = max(300.0, pm - loss_before - 0.5 * loss_here)
                th0 = _highland(pk, abs_x0[k])
                msx[k] = th0 * _n(key, ev, ix, 300000 + 1 + k)
                msy[k] = th0 * _n(key, ev, ix, 300000 + 11 + k)
        for st_i in range(n_st):
            zs = z_muon[st_i]
            var_ms = 0.0
            for k in range(n_abs):
                if abs_z[k] < zs:
                    loss_before = 0.0 if k == 0 else p_reach[k - 1]
                    loss_here = p_reach[k] - loss_before
                    pk = max(300.0, pp - loss_before - 0.5 * loss_here)
                    var_ms += (_highland(pk, abs_x0[k]) * (zs - abs_z[k])) ** 2
            scale = zs / z_muon[0]
            reg = max(abs(xs[st_i]) / (r1_half_x * scale), abs(ys[st_i]) / (r1_half_y * scale))
            ireg = 0
            while reg > 1.0 and ireg < 3:
                reg *= 0.5
                ireg += 1
            padx = pad_x1[st_i] * (1 << ireg)
            pady = pad_y1[st_i] * (1 << ireg)
            sx = math.sqrt(var_ms + padx * padx / 12.0)
            sy = math.sqrt(var_ms + pady * pady / 12.0)
            wx = foi_nsigma * sx
            wy = foi_nsigma * sy
            best = 1e30
            # the particle's own hit
            if depth_ok[st_i] and _u(key, ev, ix, 300000 + 10 + st_i) < station_eff:
                if carrier == 1:
                    dx = 0.0
                    dy = 0.0
                    for k in range(n_abs):
                        if abs_z[k] < zs:
                            dx += msx[k] * (zs - abs_z[k])
                            dy += msy[k] * (zs - abs_z[k])
                    if dec_mu and z_dec > z_t_end:
                        dx += math.tan(kink) * math.cos(phi_k) * (zs - z_dec)
                        dy += math.tan(kink) * math.sin(phi_k) * (zs - z_dec)
                else:
                    dx = 2.0 * sx * _n(key, ev, ix, 300000 + 20 + st_i)
                    dy = 2.0 * sy * _n(key, ev, ix, 300000 + 30 + st_i)
                dx += padx * (_u(key, ev, ix, 300000 + 50 + st_i) - 0.5)
                dy += pady * (_u(key, ev, ix, 300000 + 60 + st_i) - 0.5)
                if abs(dx) < wx and abs(dy) < wy:
                    best = (dx / sx) ** 2 + (dy / sy) ** 2
            # uncorrelated hits (occupancy), uniform in the FOI
            lam_r = hits_per_pad[st_i] * occ * (2.0 * wx / padx) * (2.0 * wy / pady)
            if _u(key, ev, ix, 300000 + 20 + st_i) < -math.expm1(-lam_r):
                dx = wx * (2.0 * _u(key, ev, ix, 300000 + 30 + st_i) - 1.0)
                dy = wy * (2.0 * _u(key, ev, ix, 300000 + 40 + st_i) - 1.0)
                d2 = (dx / sx) ** 2 + (dy / sy) ** 2
                if d2 < best:
                    best = d2
            if best < 1e29:
                found[st_i] = True
                nfound += 1
                dsum += best
        n_muon_hits[i] = nfound
        ism = False
        if acc and pp > 3000.0:
            if pp < 6000.0:
                ism = found[0] and found[1]
            elif pp < 10000.0:
                ism = found[0] and found[1] and (found[2] or found[3])
            else:
                ism = found[0] and found[1] and found[2] and found[3]
        is_muon[i] = ism
        if ism:
            kk = float(nfound)
            d2 = dsum / kk
            # muon hypothesis: k*D2 ~ chi2 with 2k dof
            mu_ll = math.log(kk) + _lgamma_pdf(kk * d2 + 1e-12, kk, 2.0)
            # background hypothesis: hits uniform in the FOI -> Gamma approximation to D2
            nsig2 = foi_nsigma * foi_nsigma
            shape = 2.5 * kk
            scl = 4.0 * nsig2 / (15.0 * kk)
            bkg_ll = _lgamma_pdf(d2 + 1e-12, shape, scl)
            muon_mu_ll[i] = mu_ll
            muon_bkg_ll[i] = bkg_ll
            muon_term[i] = mu_ll - bkg_ll
        else:
            muon_mu_ll[i] = -1000.0
            muon_bkg_ll[i] = -1000.0
            # likelihood ratio of *failing* isMuon: ln[(1 - eff_mu(p)) / (1 - eff_bkg)], eff_bkg ~ 1 %
            if acc and pp > 3000.0:
                eff = station_eff * station_eff * _ndtr((pp / p_reach[1] - 1.0) / straggling)
                if pp > 10000.0:
                    eff *= station_eff * station_eff * _ndtr((pp / p_reach[3] - 1.0) / straggling)
                elif pp > 6000.0:
                    eff *= (1.0 - (1.0 - station_eff) ** 2) * _ndtr((pp / p_reach[2] - 1.0) / straggling)
                muon_term[i] = math.log(max(1.0 - eff, 1e-3)) - math.log(0.99)
            else:
                muon_term[i] = 0.0
