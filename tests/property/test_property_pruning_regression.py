"""A script the convergence property found (CI profile, before the run was parametrized):
after retention pruning, a device converges to the scope's head checkpoint without a row.

Pinned verbatim (ops as drawn; ``faults=False``, fault seed 1179, pruning on) so it replays
whatever Hypothesis draws next.

Cause: d0 initialized the scope empty, so its checkpoint stayed 0 while d1 committed bundle 1
(the posts row) and a prune raised the floor past it. The server answers a pull after 0 from
above the floor without ``history_pruned`` (SERVER.md §6.2), so d0 skipped bundle 1 for good.
The client now treats a pull from 0 whose first bundle is not bundle 1 as pruned history and
rebuilds from a snapshot (focused tests: tests/client/pull/test_pull.py and
tests/e2e/client/test_e2e_recovery.py, ``...checkpoint_zero...`` / ``...pull_from_zero...``).
"""
# ruff: noqa: E501, RUF001

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.client._support import ServerProcess
from tests.property.test_property_convergence import Op, run_script

pytestmark = pytest.mark.postgres

SCRIPT = [
    Op('insert_user', device=2, pick=4544, text='\U0004126a𘢱', blob=b'\x00O|', number=29093, real=None),
    Op('push', device=2, pick=5769, text='\x03uÏ', blob=b'\x91$\xd6\x15$\xb6\xaa\xde\xaf\x8b\x03\xfd', number=-9007199254740991, real=None),
    Op('server_write', device=0, pick=23466, text='æ', blob=b'\xef\x89', number=400, real=-4.71453317226789e+107),
    Op('insert_post', device=1, pick=4151, text='\U0003fa0b\x993𤈞DL', blob=b'{\x90\x9d\xb2\\\xfb', number=-353, real=None),
    Op('prune', device=2, pick=1037, text='', blob=b'\xb43', number=-190, real=None),
    Op('switch', device=1, pick=2680, text='¸U', blob=b'', number=-555263422, real=3.43143127812071e+118),
    Op('update_category', device=2, pick=4807, text='\x1cÂ𤃐6\x85ú', blob=b'9\xf9k', number=20, real=-4.96356349164019e+16),
    Op('delete_category', device=2, pick=4780, text='𐛅c\U001047b8ÞE\x1c', blob=b'', number=3142, real=8531276882492000.0),
    Op('delete_team', device=0, pick=184, text='QrÊ\U0006ed47"7', blob=b',\xda', number=9007199254740992, real=None),
    Op('insert_file', device=0, pick=234, text='\x91î\x1d^ïõ', blob=b'\x8b', number=4899101302722, real=None),
    Op('delete_team', device=1, pick=261, text='\U00102d82', blob=b'xI', number=-933, real=-6.24201557872178e-276),
    Op('insert_user', device=2, pick=5220, text='Â\U000a72f9î»\U0006b689ê', blob=b'\nI', number=-133, real=1.66787163170723e+164),
    Op('switch', device=2, pick=138, text='á', blob=b'', number=219, real=None),
    Op('update_user', device=0, pick=3983, text='', blob=b'', number=2260721735399382, real=None),
    Op('insert_post', device=1, pick=75, text='\U0007ae1a', blob=b'\xa4\xf3\x9c\xd9u1/H\xf1\xa9', number=143, real=None),
    Op('touch_team', device=0, pick=100, text='\U000e5b27\x83:äÜ', blob=b'&', number=-1442380484, real=-1.5594236367048e+57),
    Op('restart', device=0, pick=2858, text='\x13òSO0', blob=b'@k\xaf4', number=-7556513295420, real=2.09201345477017e+16),
    Op('prune', device=1, pick=2130, text='', blob=b'\x18*Z\x8a\x8d\xc0/\xcc\xad\x84\xe3D%3\x82\n7', number=-1235, real=None),
    Op('delete_typed', device=2, pick=1354, text='³)L\U0010fce4@o', blob=b'\xd3', number=395, real=1.78476626776597e-305),
    Op('update_file', device=0, pick=1895, text='Øï', blob=b'\xb8\x17(', number=70, real=-2.14833631078482e-109),
    Op('rebuild', device=1, pick=2984, text='\U00041af7\x12ò\x8b\x9d\x9f', blob=b'\\', number=-205, real=6.30148718240886e+16),
    Op('delete_file', device=2, pick=1, text='', blob=b'\xc1\x07\x13~', number=69785, real=None),
    Op('insert_post', device=0, pick=6364, text=':÷«gÎ', blob=b')\xce\xbfoC"!', number=249, real=1e-06),
    Op('insert_team', device=0, pick=31196, text='FALSE', blob=b'', number=7103, real=6.32785620209844e+16),
    Op('update_user', device=2, pick=885, text='¥\x12åÀ\x99w', blob=b'\x80 +', number=9007199254740991, real=None),
    Op('touch_team', device=2, pick=2295, text='\x19ï', blob=b'\xff\xae~\x05\xb6\xb7\x08', number=-1984, real=3.49523254534083e+16),
    Op('delete_file', device=0, pick=81, text='', blob=b'*\x1d\x03', number=9007199254740991, real=None),
    Op('delete_user', device=2, pick=29831, text='*\U000dc6c9Ü\x07\x08\x0e', blob=b'', number=-130520, real=None),
    Op('pull', device=0, pick=20, text='U\nÅû\U000beeceÞ', blob=b'\x99', number=504, real=None),
    Op('sync', device=2, pick=53054, text='qq', blob=b'gW', number=321115, real=1.15130919262108e-302),
    Op('insert_typed', device=1, pick=682, text='\x9dJ\U000a3ec04f\U000ee8a4', blob=b'\xa2\xf3', number=122, real=2.7915451677155e-176),
    Op('update_typed', device=2, pick=1451, text='®', blob=b'\x16\x80=\xfc\x97\xe9\xedaO/', number=310462, real=None),
    Op('prune', device=0, pick=65535, text='J\x03', blob=b's\xe8\x0e\xa8\xeb\xc9\x80\x93\xbc\x11az', number=-63, real=-5.96046447753906e-08),
    Op('prune', device=1, pick=10805, text='ก ำกำ', blob=b'\xe8@\x82(\xfc\xed@\xcd&', number=78294, real=None),
    Op('update_user', device=2, pick=34424, text='.0', blob=b'"\xbeC4\x9e', number=453, real=None),
    Op('update_category', device=0, pick=1097, text='Iî5e', blob=b'\x90\xdc\xce\x15\x82\xc8\x87\xdeo\x90\x95M\x8em\xd2-\x81\xa9\x1d\xe1I', number=-2887040023, real=-2.96358592426457e+16),
    Op('rebuild', device=2, pick=116, text='', blob=b'Yl\xd5\xa9', number=-5384, real=4.04775257159265e+16),
    Op('delete_typed', device=1, pick=135, text='Õ¼2', blob=b'hV\xaa', number=584, real=None),
    Op('insert_team', device=0, pick=327, text='\U00090b98', blob=b'\xc4\x00\xfc\xb7\xaf1Y\xa4\xcd\xfb\x8f\xe8\xddy\xe1\xb9', number=153, real=None),
    Op('sync', device=0, pick=192, text='#\U000435b6ⶭ¼𤦑Ã', blob=b'\xf1f\xf7\xc1', number=-491, real=None),
    Op('push', device=0, pick=286, text='ßÍ', blob=b'\xae{\xcd\x02', number=1303, real=0.1),
    Op('prune', device=0, pick=458, text='Ā', blob=b'\xf6\xfb', number=-55341085759593, real=-8.17647407936955e-117),
    Op('update_post', device=1, pick=9633, text='¤Ã\U000a67ffi\x7fW', blob=b'B\x9c', number=-3018, real=3.29049315551824e+16),
    Op('contested_update', device=0, pick=894, text='_by_id', blob=b"_\xd6'\xc4", number=691, real=None),
    Op('contested_update', device=2, pick=65536, text="'þ,:¹", blob=b'\x10', number=4604908, real=-2.00852452184046e-254),
    Op('insert_category', device=2, pick=1886, text='', blob=b'\x99r\x8b', number=-68719476735, real=None),
    Op('update_post', device=2, pick=1, text='/\x91\x0flßÍ', blob=b'', number=-210, real=0.1),
    Op('insert_user', device=2, pick=30, text='ß', blob=b'\xc0k\xec\xed\xb3\xb2\xa4\x0b\xfeq', number=-414771, real=None),
    Op('update_user', device=0, pick=38, text='z\U000db430\U0005ddb3', blob=b'\xd0\xa2\x13\xbejF\x90OP7\x81', number=2209, real=None),
    Op('update_file', device=2, pick=7838, text='Ò^ï\x91ç^', blob=b'^|r\x14\xac\xfe\xeb\x82\x0b\xcf6\xbf\xacP\xff\x8c$#c\x1e6', number=-250, real=-1.75445780204115e+16),
    Op('delete_user', device=0, pick=464, text='', blob=b':', number=-366, real=None),
    Op('update_typed', device=2, pick=29, text='f', blob=b'\xf7\x9a}\xbc\xe4\xc5\xcf', number=96959331743, real=None),
    Op('touch_team', device=0, pick=23087, text='KA[\x12\x84ì', blob=b']', number=521092975178, real=6.35328348119762e-223),
    Op('update_category', device=2, pick=11892, text='\U000a1150냃o\x84ÿ\x19', blob=b':', number=-14811534, real=3.08257880131074e-44),
    Op('delete_team', device=1, pick=560, text='\U000f9b13', blob=b'', number=-80, real=5.15673176466299e+16),
    Op('insert_user', device=1, pick=194, text='\x8a', blob=b'\x0b3', number=-368, real=None),
    Op('contested_update', device=2, pick=15992, text='\x18W¯Ā', blob=b'\xf4', number=-1264, real=None),
    Op('pull', device=0, pick=65536, text='', blob=b'S\xd9\xba\x9b\xe1J\x9e', number=-3208324, real=6.96114239344482e+16),
    Op('restart', device=0, pick=300, text='', blob=b'', number=250, real=None),
    Op('insert_category', device=1, pick=51464, text='://', blob=b'Gv3\xdc\x11G', number=430, real=None),
]


def test_pruned_history_script_converges(
    live_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    server, url = live_server
    asyncio.run(run_script(server, url, tmp_path, SCRIPT, False, 1179,
                           True))


def test_same_script_without_pruning_converges(
    live_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    server, url = live_server
    asyncio.run(run_script(server, url, tmp_path, SCRIPT, False, 1179,
                           False))
